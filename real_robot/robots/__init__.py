"""The robots a real-robot task runs on, each one folder here declaring its `ROBOT`. A task of
REAL_TASK_CONFIGS names its robot (`'robot'`; ALOHA's, the original's, when it names none), and what
differs between robots comes from its declaration, never from a test of the task's keys: how its
follower arms and cameras open for evaluation, replay and teleoperation, its leader arms, and which
backends it runs on.

    robot_of(task_config).eval_env(task_config, backend, driver, camera_names, image_size) -> a RobotEnv

The folders (aloha/, so/, koch/, ...) are found when a robot is first asked for; `register_robot` adds
one from your own code (docs/extending.md).
"""
import importlib
import pkgutil
from dataclasses import dataclass

from real_robot.tasks import TASK_CONFIGS

DEFAULT_ROBOT = 'aloha'  # the robot of a task that names none: the original's two-arm ALOHA


@dataclass(frozen=True)
class Robot:
    """One kind of robot.

    followers(task_config, driver, camera_names, image_size, backend, realtime) -> RobotEnv: its follower
    arms and cameras (camera_names None: the task's; realtime: a simulated follower paced at the task's
    rate, for teleoperation), ValueError naming --robot_driver when it takes no such driver.
    teleop: how record_episodes.py teleoperates it (recording/robot.py): 'leader_arms' (the followers
    copy leaders(task_config), read with read_leaders(leaders) -> action, after moving to the leaders'
    pose in opening_move_time() seconds, read from its settings when it starts) or 'aloha' (the
    original's opening ceremony)."""
    name: str
    followers: callable
    backends: tuple = ('builtin',)  # the --robot_backend values it runs on
    teleop: str = 'leader_arms'
    leaders: callable = None
    read_leaders: callable = None
    opening_move_time: callable = None
    check_driver: callable = None  # (driver) -> None, ValueError naming --robot_driver; before any port opens

    def eval_env(self, task_config, backend='builtin', driver='auto', camera_names=None, image_size=None):
        """The follower arms and cameras a policy is evaluated on."""
        if backend not in self.backends:
            raise ValueError(f"--robot_backend {backend}: the {self.name} robot runs on "
                             f"{' or '.join(self.backends)}")
        return self.followers(task_config, driver, camera_names, image_size, backend, False)

    def replay_env(self, task_config, driver='auto'):
        """The follower arms actions are replayed on (no cameras)."""
        return self.followers(task_config, driver, [], None, 'builtin', False)

    def teleop_env(self, task_config, driver='auto'):
        """The follower arms and cameras of a teleoperated recording."""
        return self.followers(task_config, driver, None, None, 'builtin', True)


ROBOTS = {}  # name -> Robot: the folders here once found, and those registered


def register_robot(robot):
    """Make a Robot known by its name, for the tasks that name it."""
    ROBOTS[robot.name] = robot


def _find_robot_folders():
    """Register the ROBOT of each folder of this package (once)."""
    for folder in pkgutil.iter_modules(__path__):
        if folder.ispkg and folder.name not in ROBOTS:
            register_robot(importlib.import_module(f'{__name__}.{folder.name}').ROBOT)


def robot_of(task_config, task_name='the task'):
    """The Robot a task's config names (DEFAULT_ROBOT when it names none)."""
    _find_robot_folders()
    name = task_config.get('robot', DEFAULT_ROBOT)
    if 'robot' not in task_config and 'followers' in task_config:  # a task written for an earlier version
        raise KeyError(f"{task_name}: the task names follower arms but no robot: add its 'robot' (a folder of "
                       f"real_robot/robots/: {', '.join(sorted(ROBOTS))}) to its config (REAL_TASK_CONFIGS in "
                       f"constants.py)")
    if name not in ROBOTS:
        raise KeyError(f"{task_name}: robot {name!r} is not one of {', '.join(sorted(ROBOTS))} "
                       f"(the folders of real_robot/robots/)")
    return ROBOTS[name]


def make_eval_env(backend='builtin', driver='auto', camera_names=None, image_size=None, task_name=None):
    """Environment for policy evaluation on a real (or simulated-real) robot: the arms of the robot the
    task names (REAL_TASK_CONFIGS in constants.py), ALOHA's by default."""
    task_config = TASK_CONFIGS.get(task_name, {})
    return robot_of(task_config, task_name).eval_env(task_config, backend, driver, camera_names, image_size)
