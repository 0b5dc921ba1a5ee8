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
import atexit
import collections
import contextlib
import importlib
import threading
import time

import dm_env
import numpy as np

from constants import (MASTER_GRIPPER_JOINT_NORMALIZE_FN, PUPPET_GRIPPER_JOINT_CLOSE, PUPPET_GRIPPER_JOINT_OPEN,
                       PUPPET_GRIPPER_JOINT_UNNORMALIZE_FN, PUPPET_GRIPPER_POSITION_NORMALIZE_FN,
                       PUPPET_GRIPPER_VELOCITY_NORMALIZE_FN)
from real_robot import settings
from real_robot.bots import ARM_JOINTS, FINGER_INDEX, GRIPPER_INDEX, RobotFault, TransientFault
from real_robot.cameras import CameraSet
from real_robot.robot_utils import get_arm_joint_positions, move_arms, move_grippers, setup_puppet_bot
from real_robot.safety import Watchdog, clamp_arm_targets, clamp_gripper_command
from real_robot.tasks import CAMERA_NAMES as ALOHA_CAMERA_NAMES
from real_robot.tasks import TASK_CONFIGS

DRIVERS = ('auto', 'interbotix', 'dynamixel', 'sim')
BACKENDS = ('builtin', 'aloha_scripts')


class RobotEnv:
    """Follower arms and their cameras behind dm_env-style reset() / step(), with the safe path: a
    fault or Ctrl-C during set-up, reset or step moves the arms to their safe pose and releases
    torque; a watchdog holds the present position when no step comes. Subclasses give the robot's
    observation and action layout (_qpos, _qvel, _effort, _command, _hold, _reset, _setup_robots)
    and its safe pose (safe_pose)."""
    safe_pose = None  # arm pose reached before torque is released; None: released where the arms are

    def __init__(self, bots, cameras, setup_robots=True):
        self.bots = tuple(bots)
        self.cameras = cameras if hasattr(cameras, 'get_images') else CameraSet(cameras)
        self.clock = self.bots[0].clock
        self._targets = None  # last commanded joint targets, one array per arm
        self._lock = threading.RLock()  # serialises commands of step() and the watchdog
        self._watchdog_fault = None
        self._engaged = False  # torque may be on: park the arms on close
        self._closed = False
        self.watchdog = Watchdog(self._on_policy_stall) if self.clock.realtime else None
        if setup_robots:
            self.setup_robots()
        atexit.register(self.close)  # parks the arms if the program ends without close()

    def setup_robots(self):
        self._engaged = True
        self._guarded(self._setup_robots)

    ### observation
    def _read_states(self):
        """JointState of each arm; failed reads are retried (no new goals meanwhile) up to SERVO_TIMEOUT_S."""
        deadline = time.monotonic() + settings.SERVO_TIMEOUT_S
        while True:
            try:
                return [bot.read() for bot in self.bots]
            except TransientFault as e:
                if time.monotonic() > deadline:
                    raise RobotFault(f'{e} (reads kept failing for SERVO_TIMEOUT_S = {settings.SERVO_TIMEOUT_S} s)')
                time.sleep(0.002)

    def get_qpos(self):
        return self._qpos(self._read_states())

    def get_qvel(self):
        return self._qvel(self._read_states())

    def get_effort(self):
        return self._effort(self._read_states())

    def get_images(self):
        return self.cameras.get_images()

    def get_observation(self):
        states = self._read_states()
        obs = collections.OrderedDict()
        obs['qpos'] = self._qpos(states)
        obs['qvel'] = self._qvel(states)
        obs['effort'] = self._effort(states)
        obs['images'] = self.get_images()
        return obs

    def get_reward(self):
        return 0  # NOTE(faithful): aloha_scripts' real environment has no reward

    ### commands
    def hold_position(self):
        """Command every joint to where it is now (stops pushing against whatever blocks it)."""
        with self._lock:
            states = self._read_states()
            self._targets = [self._hold(bot, state) for bot, state in zip(self.bots, states)]

    def _on_policy_stall(self, idle):
        if self.watchdog.stalls == 1:
            print(f'Watchdog: no action for {idle:.2f} s (POLICY_STALL_S = {settings.POLICY_STALL_S} s): '
                  'holding the present position (reported once)')
        try:
            self.hold_position()
        except RobotFault as e:
            self._watchdog_fault = e

    ### episode
    def reset(self, fake=False):
        return self._guarded(self._reset, fake)

    def _first_step(self):
        return dm_env.TimeStep(step_type=dm_env.StepType.FIRST, reward=self.get_reward(), discount=None,
                               observation=self.get_observation())

    def step(self, action):
        return self._guarded(self._step, action)

    def _step(self, action):
        if self._watchdog_fault is not None:
            raise self._watchdog_fault
        with self._lock:
            self._engaged = True
            self._command(action)
        self.clock.tick()
        obs = self.get_observation()
        if self.watchdog:
            self.watchdog.kick()
        return dm_env.TimeStep(step_type=dm_env.StepType.MID, reward=self.get_reward(), discount=None,
                               observation=obs)

    ### safety
    def _guarded(self, function, *args):
        """Run function; on a fault or Ctrl-C take the safe path, then re-raise."""
        try:
            return function(*args)
        except RobotFault as e:
            self.safety_stop(str(e))
            raise
        except KeyboardInterrupt:
            self.safety_stop('interrupted (Ctrl-C)')
            raise

    def safety_stop(self, reason):
        motion = 'Moving the arms to the safe pose and releasing torque' if self.safe_pose is not None else \
            'Releasing torque'
        print(f'SAFETY STOP: {reason}\n{motion}.')
        self.park()

    def park(self):
        """Arms to safe_pose (from the last known pose if a read fails), then torque off.
        Goes on past failures so that every working servo ends without torque."""
        if self.watchdog:
            self.watchdog.disarm()
        with self._lock:
            if self.safe_pose is not None:
                self._move_to_safe_pose()
            for bot in self.bots:
                try:
                    bot.torque(False, 'all')
                except RobotFault as e:
                    print(f"Could not confirm torque off of '{bot.name}': {e}")
            self._engaged = False

    def _move_to_safe_pose(self):
        starts, moving = [], []
        for bot in self.bots:
            try:
                starts.append(get_arm_joint_positions(bot))
                moving.append(bot)
            except RobotFault:
                if bot.last_state is not None:
                    starts.append(bot.last_state.position[:ARM_JOINTS])
                    moving.append(bot)
        try:
            move_arms(moving, [self.safe_pose] * len(moving), settings.SAFE_MOVE_TIME_S, starts)
        except RobotFault as e:
            print(f'Could not reach the safe pose: {e}')

    def close(self):
        """Park the arms if torque may be on, stop threads, release ports and cameras."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        if self.watchdog:
            self.watchdog.close()
        if self._engaged:
            print('Closing the robot environment: ' + ('arms to the safe pose, ' if self.safe_pose is not None else '')
                  + 'torque off.')
            self.park()
        self.cameras.close()
        for bot in self.bots:
            bot.close()


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


def make_cameras(driver, camera_names, stack):
    from real_robot import cameras as cams
    opened = {}
    for name in camera_names:
        if driver == 'interbotix':
            camera = cams.Camera(name, cams.RosImageSource(settings.ROS_CAMERA_TOPIC.format(cam_name=name)))
            stack.callback(camera.close)
            camera.wait_first_frame(settings.CAMERA_OPEN_TIMEOUT_S)
        else:
            camera = cams.open_camera(name)
            stack.callback(camera.close)
        opened[name] = camera
    return opened


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


def make_eval_env(backend='builtin', driver='auto', camera_names=None, image_size=None, task_name=None):
    """Environment for policy evaluation on a real (or simulated-real) robot; an SO task's arms
    when task_name names one (real_robot/tasks.py)."""
    from real_robot.so_env import check_driver, is_so_task, make_so_env
    task_config = TASK_CONFIGS.get(task_name, {})
    if is_so_task(task_config):
        if backend != 'builtin':
            raise ValueError(f'--robot_backend {backend}: SO arms run on the builtin backend')
        check_driver(driver)
        return make_so_env(task_config, camera_names)
    if backend == 'aloha_scripts':
        return _aloha_scripts_module('real_env').make_real_env(init_node=True)
    if backend != 'builtin':
        raise ValueError(f"--robot_backend: unknown backend '{backend}'; expected one of {', '.join(BACKENDS)}")
    return make_real_env(init_node=True, driver=driver, camera_names=camera_names, image_size=image_size)


def open_grippers(env, backend='builtin'):
    """The end of a rollout: ALOHA opens both follower grippers; SO arms hold their pose."""
    if backend == 'aloha_scripts':
        bots, targets = [env.puppet_bot_left, env.puppet_bot_right], [PUPPET_GRIPPER_JOINT_OPEN] * 2
        _aloha_scripts_module('robot_utils').move_grippers(bots, targets, move_time=0.5)
    else:
        env._guarded(env.finish_episode)
