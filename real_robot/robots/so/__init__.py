"""SO-100 / SO-101 arms: followers and leaders of six Feetech STS3215 servos each, in LeRobot's units and
calibration files (real_robot/feetech.py, so_env.py; driver 'sim': the simulated SO-101, so_sim.py)."""
from real_robot import settings
from real_robot.robots import Robot


def followers(task_config, driver, camera_names, image_size, backend, realtime):
    from real_robot.so_sim import make_so_followers
    return make_so_followers(task_config, driver, camera_names, image_size, realtime)


def leaders(task_config):
    from real_robot.so_env import make_so_leaders
    return make_so_leaders(task_config)


def read_leaders(arms):
    from real_robot.so_env import get_so_action
    return get_so_action(arms)


def check_driver(driver):
    from real_robot.so_env import check_driver
    check_driver(driver)


ROBOT = Robot('so', followers, leaders=leaders, read_leaders=read_leaders,
              opening_move_time=lambda: settings.SO_OPENING_MOVE_TIME_S, check_driver=check_driver)
