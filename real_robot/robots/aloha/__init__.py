"""ALOHA, the original's robot: two ViperX follower arms and two WidowX leaders on Dynamixel buses
(real_robot/real_env.py, reached through the Interbotix ROS stack, our Dynamixel driver or the
simulation), teleoperated with aloha_scripts' opening ceremony."""
from real_robot import settings
from real_robot.robots import Robot


def followers(task_config, driver, camera_names, image_size, backend, realtime):
    from real_robot.real_env import aloha_eval_env
    return aloha_eval_env(backend, driver, camera_names, image_size)


ROBOT = Robot('aloha', followers, backends=settings.ROBOT_BACKENDS, teleop='aloha')
