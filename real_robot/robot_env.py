"""The base of every real-robot environment (ALOHA's in real_env.py, the SO arms' in so_env.py):
follower arms and cameras behind dm_env-style reset() / step() with the safe path, and the cameras
a driver opens."""
import atexit
import collections
import threading
import time

import dm_env
import numpy as np

from real_robot import settings
from real_robot.bots import ARM_JOINTS, RobotFault, TransientFault
from real_robot.cameras import CameraSet
from real_robot.robot_utils import get_arm_joint_positions, move_arms
from real_robot.safety import Watchdog


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
        self._steps = 0  # actions sent since the last reset
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
        self._steps = 0
        return self._guarded(self._reset, fake)

    def _check_finite(self, action):
        """A NaN or infinite action is never sent: the arms hold where they are, then the safe stop runs."""
        values = np.asarray(action, dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            self.hold_position()
            raise RobotFault(f'step {self._steps}: the action holds non-finite values ({values[bad[0]]} at index '
                             f'{bad[0]}, {len(bad)} of {values.size}); not sent, the arms held their position')

    def _first_step(self):
        return dm_env.TimeStep(step_type=dm_env.StepType.FIRST, reward=self.get_reward(), discount=None,
                               observation=self.get_observation())

    def step(self, action):
        return self._guarded(self._step, action)

    def _step(self, action):
        if self._watchdog_fault is not None:
            raise self._watchdog_fault
        self._check_finite(action)
        with self._lock:
            self._engaged = True
            self._command(action)
        self._steps += 1
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
