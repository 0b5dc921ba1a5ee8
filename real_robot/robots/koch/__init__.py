"""Koch arms (v1.0 / v1.1, LeRobot's koch_follower and koch_leader): six Dynamixel XL430 / XL330 servos
per arm on the project's Dynamixel bus, calibrated and measured in LeRobot's files and units. A task
names it with `'robot': 'koch'` and its arms (`followers`, `leaders`: names of KOCH_ARMS in
settings.py); the arms' code is arm.py, their environment env.py, their calibration calibrate.py."""
from real_robot.robots import Robot
from real_robot.robots.koch import settings


def followers(task_config, driver, camera_names, image_size, backend, realtime):
    from real_robot.robots.koch.env import make_koch_env
    return make_koch_env(task_config, driver, camera_names)


def leaders(task_config):
    from real_robot.robots.koch.env import make_koch_leaders
    return make_koch_leaders(task_config)


def read_leaders(arms):
    from real_robot.robots.koch.env import read_leaders
    return read_leaders(arms)


def check_driver(driver):
    from real_robot.robots.koch.env import check_driver
    check_driver(driver)


ROBOT = Robot('koch', followers, leaders=leaders, read_leaders=read_leaders,
              opening_move_time=lambda: settings.OPENING_MOVE_TIME_S, check_driver=check_driver)
