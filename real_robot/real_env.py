"""The bimanual real-robot environment with aloha_scripts' interface, and its factories.

Action (2 * 7,): per arm (left, then right) 6 absolute joint positions (rad) and the gripper
command normalised 0 (closed) .. 1 (open).
Observation (OrderedDict):
    qpos   (2 * 7,) per arm 6 joint positions and the normalised finger position (0 closed, 1 open)
    qvel   (2 * 7,) per arm 6 joint velocities (rad/s) and the normalised finger velocity
    effort (2 * 7,) per arm 6 joint currents and the gripper current (mA)
    images {camera name: (480, 640, 3) uint8 RGB}
step() sends the clamped targets, waits for the next DT tick, then reads the robot and cameras.
Ticks follow a deadline schedule, so the loop runs at 1 / DT whenever the policy and the reads fit
in DT (aloha_scripts slept a full DT after each command, which slowed the loop by that work).
"""
import contextlib
import importlib

import numpy as np

from constants import (MASTER_GRIPPER_JOINT_NORMALIZE_FN, PUPPET_GRIPPER_JOINT_CLOSE, PUPPET_GRIPPER_JOINT_OPEN,
                       PUPPET_GRIPPER_JOINT_UNNORMALIZE_FN, PUPPET_GRIPPER_POSITION_NORMALIZE_FN,
                       PUPPET_GRIPPER_VELOCITY_NORMALIZE_FN)
from real_robot import settings
from real_robot.bots import ARM_JOINTS, FINGER_INDEX, GRIPPER_INDEX
from real_robot.robot_env import RobotEnv, make_cameras
from real_robot.robot_utils import get_arm_joint_positions, move_arms, move_grippers, setup_puppet_bot
from real_robot.safety import clamp_arm_targets, clamp_gripper_command
from real_robot.tasks import CAMERA_NAMES as ALOHA_CAMERA_NAMES

DRIVERS = settings.ALOHA_DRIVERS


class RealEnv(RobotEnv):
    """Two ALOHA follower ("puppet") arms and their cameras (the layout in the module docstring)."""
    safe_pose = settings.SAFE_ARM_POSE

    def __init__(self, puppet_bot_left, puppet_bot_right, cameras, setup_robots=True):
        self.puppet_bot_left, self.puppet_bot_right = puppet_bot_left, puppet_bot_right
        super().__init__((puppet_bot_left, puppet_bot_right), cameras, setup_robots)

    def _setup_robots(self):
        for bot in self.bots:
            setup_puppet_bot(bot)

    ### observation
    @staticmethod
    def _qpos(states):
        return np.concatenate([np.append(s.position[:ARM_JOINTS], PUPPET_GRIPPER_POSITION_NORMALIZE_FN(
            s.position[FINGER_INDEX])) for s in states])  # finger position, not gripper joint

    @staticmethod
    def _qvel(states):
        return np.concatenate([np.append(s.velocity[:ARM_JOINTS], PUPPET_GRIPPER_VELOCITY_NORMALIZE_FN(
            s.velocity[FINGER_INDEX])) for s in states])

    @staticmethod
    def _effort(states):
        return np.concatenate([s.effort[:GRIPPER_INDEX + 1] for s in states])

    ### commands
    def set_gripper_pose(self, left_gripper_desired_pos_normalized, right_gripper_desired_pos_normalized):
        commands = (left_gripper_desired_pos_normalized, right_gripper_desired_pos_normalized)
        for bot, normalized in zip(self.bots, commands):
            bot.command_gripper(PUPPET_GRIPPER_JOINT_UNNORMALIZE_FN(clamp_gripper_command(normalized)))

    def _command(self, action):
        """Clamp and send one action (2 * (6 + 1),); returns nothing, the servos move meanwhile."""
        action = np.asarray(action, dtype=float)
        state_len = len(action) // 2
        halves = (action[:state_len], action[state_len:])
        if self._targets is None:
            self._targets = [get_arm_joint_positions(bot) for bot in self.bots]
        for side, (bot, half) in enumerate(zip(self.bots, halves)):
            self._targets[side] = clamp_arm_targets(half[:ARM_JOINTS], self._targets[side],
                                                    settings.PUPPET_JOINT_LIMITS, settings.MAX_JOINT_STEP)
            bot.command_arm(self._targets[side])
        self.set_gripper_pose(halves[0][-1], halves[1][-1])

    @staticmethod
    def _hold(bot, state):
        bot.command_arm(state.position[:ARM_JOINTS])
        bot.command_gripper(state.position[GRIPPER_INDEX])
        return np.array(state.position[:ARM_JOINTS])

    ### episode
    def finish_episode(self):
        """The end of a rollout: both follower grippers open."""
        move_grippers(list(self.bots), [PUPPET_GRIPPER_JOINT_OPEN] * 2, move_time=0.5)

    def _reset_joints(self):
        move_arms(list(self.bots), [settings.START_ARM_QPOS] * 2, move_time=settings.RESET_ARM_MOVE_TIME_S)

    def _reset_gripper(self):
        """Open, then close the grippers."""
        move_grippers(list(self.bots), [PUPPET_GRIPPER_JOINT_OPEN] * 2, move_time=0.5)
        move_grippers(list(self.bots), [PUPPET_GRIPPER_JOINT_CLOSE] * 2, move_time=1)

    def _reset(self, fake):
        if self.watchdog:
            self.watchdog.disarm()
        if not fake:
            self._engaged = True
            self.clock.on_reset()
            for bot in self.bots:
                bot.reboot_gripper()
            self._reset_joints()
            self._reset_gripper()
        ts = self._first_step()
        qpos = ts.observation['qpos']
        self._targets = [np.array(qpos[side * (ARM_JOINTS + 1):side * (ARM_JOINTS + 1) + ARM_JOINTS])
                         for side in range(2)]
        return ts


def get_action(master_bot_left, master_bot_right):
    """Teleoperation action from the leader arms: their 6 joints and normalised gripper each."""
    halves = []
    for bot in (master_bot_left, master_bot_right):
        position = bot.read().position
        halves.append(np.append(position[:ARM_JOINTS], MASTER_GRIPPER_JOINT_NORMALIZE_FN(position[GRIPPER_INDEX])))
    return np.concatenate(halves)


### factories
def resolve_driver(driver):
    """'auto' -> 'interbotix' when the Interbotix Python modules import, else 'dynamixel'."""
    if driver == 'feetech':
        raise ValueError("--robot_driver feetech drives SO-100 / SO-101 arms; this task's arms are ALOHA's "
                         f"({', '.join(DRIVERS)})")
    if driver not in DRIVERS:
        raise ValueError(f"--robot_driver: unknown driver '{driver}'; expected one of {', '.join(DRIVERS)}")
    if driver != 'auto':
        return driver
    try:
        importlib.import_module('interbotix_xs_modules.arm')
        return 'interbotix'
    except ImportError:
        return 'dynamixel'


def _make_bots(driver, names, model, init_node, stack):
    if driver == 'interbotix':
        from real_robot.interbotix import InterbotixBot
        bots = [InterbotixBot(name, model, init_node=init_node and i == 0) for i, name in enumerate(names)]
    else:
        from real_robot.dynamixel import DynamixelBot
        bots = [DynamixelBot(name, settings.SERVO_PORTS[name], model) for name in names]
    for bot in bots:
        stack.callback(bot.close)
    return bots


def make_real_env(init_node, setup_robots=True, driver='auto', camera_names=None, image_size=None):
    """The aloha_scripts entry point. driver: 'auto' | 'interbotix' | 'dynamixel' | 'sim';
    camera_names: cameras to open (default ALOHA's four); image_size (H, W): render size of the
    simulated robot (real cameras deliver settings.CAMERA_HW)."""
    driver = resolve_driver(driver)
    camera_names = list(camera_names or ALOHA_CAMERA_NAMES)
    if driver == 'sim':
        from real_robot.sim_robot import SimRig
        rig = SimRig(camera_names, image_size)
        return RealEnv(*rig.bots, rig.cameras, setup_robots=setup_robots)
    with contextlib.ExitStack() as stack:
        left, right = _make_bots(driver, ('puppet_left', 'puppet_right'), settings.PUPPET_MODEL, init_node, stack)
        cameras = make_cameras(driver, camera_names, stack)
        env = RealEnv(left, right, cameras, setup_robots=setup_robots)
        stack.pop_all()
    return env


def make_master_bots(driver='auto', init_node=False):
    """The two leader ("master") arms for teleoperation: (master_bot_left, master_bot_right)."""
    driver = resolve_driver(driver)
    if driver == 'sim':
        raise ValueError("--robot_driver sim has no leader arms to teleoperate; use 'dynamixel' or 'interbotix'")
    with contextlib.ExitStack() as stack:
        bots = _make_bots(driver, ('master_left', 'master_right'), settings.MASTER_MODEL, init_node, stack)
        stack.pop_all()
    return tuple(bots)


def _aloha_scripts_module(name):
    try:
        return importlib.import_module(f'aloha_scripts.{name}')
    except ImportError as e:
        raise ImportError(f"--robot_backend aloha_scripts: cannot import aloha_scripts.{name} ({e}). It needs the "
                          'ALOHA repository (github.com/tonyzhaozh/aloha) on PYTHONPATH with ROS 1 and the '
                          'Interbotix packages; or use --robot_backend builtin (no ROS needed)') from e


def aloha_eval_env(backend='builtin', driver='auto', camera_names=None, image_size=None):
    """ALOHA's follower arms and cameras, through this backend or aloha_scripts'."""
    if backend == 'aloha_scripts':
        return _aloha_scripts_module('real_env').make_real_env(init_node=True)
    if backend != 'builtin':
        raise ValueError(f"--robot_backend: unknown backend '{backend}'; expected one of "
                         f"{', '.join(settings.ROBOT_BACKENDS)}")
    return make_real_env(init_node=True, driver=driver, camera_names=camera_names, image_size=image_size)


def open_grippers(env, backend='builtin'):
    """The end of a rollout: ALOHA opens both follower grippers; SO arms hold their pose."""
    if backend == 'aloha_scripts':
        bots, targets = [env.puppet_bot_left, env.puppet_bot_right], [PUPPET_GRIPPER_JOINT_OPEN] * 2
        _aloha_scripts_module('robot_utils').move_grippers(bots, targets, move_time=0.5)
    else:
        env._guarded(env.finish_episode)
