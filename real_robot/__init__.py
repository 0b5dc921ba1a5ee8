"""Real-robot backend with aloha_scripts' interface and no ROS requirement.

    from real_robot import make_real_env, move_grippers, TASK_CONFIGS   # as aloha_scripts
    env = make_eval_env(backend='builtin', driver='auto')                # what evaluation uses

Drivers: 'interbotix' (ROS 1 Interbotix stack), 'dynamixel' (Dynamixel SDK on the serial ports),
'sim' (the MuJoCo scene behind the same interface); 'auto' picks interbotix when it imports.
SO-100 / SO-101 tasks run on 'feetech' (feetech-servo-sdk): make_so_env, make_so_leaders.
Hardware settings and safety limits: real_robot/settings.py.
"""
from real_robot.bots import RobotFault
from real_robot.real_env import RealEnv, get_action, make_master_bots, make_real_env, open_grippers, resolve_driver
from real_robot.robots import make_eval_env
from real_robot.robot_utils import (move_arms, move_grippers, setup_master_bot, setup_puppet_bot, torque_off,
                                    torque_on)
from real_robot.so_env import SOEnv, get_so_action, make_so_env, make_so_leaders
from real_robot.tasks import TASK_CONFIGS, get_task_config

__all__ = ['RobotFault', 'RealEnv', 'get_action', 'make_eval_env', 'make_master_bots', 'make_real_env',
           'open_grippers', 'resolve_driver', 'move_arms', 'move_grippers', 'setup_master_bot',
           'setup_puppet_bot', 'torque_off', 'torque_on', 'SOEnv', 'get_so_action', 'make_so_env',
           'make_so_leaders', 'TASK_CONFIGS', 'get_task_config']
