"""Koch follower arms and their cameras behind the SO arms' environment (its units, safety clamps,
range check before torque and watchdog: real_robot/so_env.py), and the leader arms that teleoperate
them. Action and qpos (6 * arms,): per follower arm (left first) shoulder_pan, shoulder_lift,
elbow_flex, wrist_flex, wrist_roll, gripper in LeRobot's units (settings.BODY_UNITS)."""
import contextlib

import numpy as np

from real_robot.bots import Clock
from real_robot.robot_env import make_cameras
from real_robot.robots.koch import settings
from real_robot.robots.koch.arm import open_arm
from real_robot.so_env import SOEnv, open_arms
from tasks import control_hz


class KochEnv(SOEnv):
    safe_pose = settings.SAFE_POSE
    max_step = settings.MAX_STEP
    what = 'Koch arm'


def check_driver(driver):
    if driver not in settings.DRIVERS:
        raise ValueError(f"--robot_driver {driver}: Koch arms are driven by their Dynamixel driver; use "
                         f"{' or '.join(settings.DRIVERS)}")


def task_clock(task_config):
    return Clock(1 / control_hz(task_config))


def make_koch_env(task_config, driver='auto', camera_names=None):
    """The Koch task's follower arms and cameras at its rate (tasks.control_hz)."""
    check_driver(driver)
    with contextlib.ExitStack() as stack:
        arms = open_arms(open_arm, task_config['followers'], 'follower', task_clock(task_config), stack)
        names = task_config['camera_names'] if camera_names is None else camera_names
        env = KochEnv(arms, make_cameras('dynamixel', names, stack))
        stack.pop_all()
    return env


def make_koch_leaders(task_config):
    """The Koch task's leader arms, set up to be moved by hand (their grippers held open as triggers)."""
    with contextlib.ExitStack() as stack:
        leaders = open_arms(open_arm, task_config['leaders'], 'leader', task_clock(task_config), stack)
        for arm in leaders:
            arm.configure()
        stack.pop_all()
    return leaders


def read_leaders(leaders):
    """Teleoperation action: the leader arms' positions (6 * arms,) in calibrated units."""
    return np.concatenate([arm.read().position for arm in leaders])
