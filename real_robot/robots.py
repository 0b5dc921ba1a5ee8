"""The robots a real-robot task runs on, each declared once. A task of REAL_TASK_CONFIGS names its robot
(`'robot'`; ALOHA's, the original's, when it names none), and what differs between robots comes from
here, never from a test of the task's keys: how its follower arms and cameras open for evaluation and
for replay, and which backends it runs on. The teleoperation session of each robot is the recorder's
(recording/robot.py, by the robot's name).

    ROBOTS['so'].eval_env(task_config, backend, driver, camera_names, image_size) -> a RobotEnv
"""
from dataclasses import dataclass

from real_robot import settings
from real_robot.tasks import TASK_CONFIGS

DEFAULT_ROBOT = 'aloha'  # the robot of a task that names none: the original's two-arm ALOHA


@dataclass(frozen=True)
class Robot:
    """One kind of robot: `name` (what a task's 'robot' says), its follower factory
    followers(task_config, driver, camera_names, image_size, backend) -> RobotEnv, and the
    --robot_backend values it runs on."""
    name: str
    followers: callable
    backends: tuple = ('builtin',)

    def eval_env(self, task_config, backend='builtin', driver='auto', camera_names=None, image_size=None):
        """The follower arms and cameras a policy is evaluated on."""
        if backend not in self.backends:
            raise ValueError(f"--robot_backend {backend}: the {self.name} robot runs on "
                             f"{' or '.join(self.backends)}")
        return self.followers(task_config, driver, camera_names, image_size, backend)

    def replay_env(self, task_config, driver='auto'):
        """The follower arms actions are replayed on (no cameras)."""
        return self.followers(task_config, driver, [], None, 'builtin')


def _aloha_followers(task_config, driver, camera_names, image_size, backend):
    from real_robot.real_env import aloha_eval_env
    return aloha_eval_env(backend, driver, camera_names, image_size)


def _so_followers(task_config, driver, camera_names, image_size, backend):
    from real_robot.so_sim import make_so_followers
    return make_so_followers(task_config, driver, camera_names, image_size)


ROBOTS = {robot.name: robot for robot in (
    Robot('aloha', _aloha_followers, backends=settings.ROBOT_BACKENDS),
    Robot('so', _so_followers),
)}


def register_robot(robot):
    """Make a Robot known by its name, for the tasks that name it."""
    ROBOTS[robot.name] = robot


def robot_of(task_config, task_name='the task'):
    """The Robot a task's config names (DEFAULT_ROBOT when it names none)."""
    name = task_config.get('robot', DEFAULT_ROBOT)
    if 'robot' not in task_config and 'followers' in task_config:  # a task written for an earlier version
        raise KeyError(f"{task_name}: the task names follower arms but no robot: add 'robot': 'so' to its config "
                       f"(REAL_TASK_CONFIGS in constants.py)")
    if name not in ROBOTS:
        raise KeyError(f"{task_name}: robot {name!r} is not one of {', '.join(ROBOTS)} (real_robot/robots.py)")
    return ROBOTS[name]


def make_eval_env(backend='builtin', driver='auto', camera_names=None, image_size=None, task_name=None):
    """Environment for policy evaluation on a real (or simulated-real) robot: the arms of the robot the
    task names (REAL_TASK_CONFIGS in constants.py), ALOHA's by default."""
    task_config = TASK_CONFIGS.get(task_name, {})
    return robot_of(task_config, task_name).eval_env(task_config, backend, driver, camera_names, image_size)
