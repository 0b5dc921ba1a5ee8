"""SO-100 / SO-101 arms behind the robot environment's interface, and their factories.

Action and qpos (6 * arms,): per follower arm (left first) shoulder_pan, shoulder_lift, elbow_flex,
wrist_flex, wrist_roll, gripper in the calibrated units (real_robot/feetech.py; LeRobot's).
Observation (OrderedDict):
    qpos   (6 * arms,) positions;  qvel (6 * arms,) velocities (units/s);  effort (6 * arms,) currents (mA)
    images {camera name: (H, W, 3) uint8 RGB}
The safety layer: targets are clamped to each joint's calibrated range and to SO_MAX_STEP encoder
steps from the previous target; an arm outside its calibrated range at set-up is not powered; the
watchdog holds position when steps stop coming; any fault or Ctrl-C releases torque (after moving
to SO_SAFE_POSE when set). An SO task's config names its robot, arms and rate:
    {'robot': 'so', 'followers': ['so_follower'], 'leaders': ['so_leader'], 'fps': 30, 'camera_names': [...], ...}
"""
import contextlib

import numpy as np

from real_robot import settings
from real_robot.bots import Clock
from real_robot.robot_env import RobotEnv, make_cameras
from real_robot.safety import clamp_arm_targets
from tasks import control_hz, so_feature_names

SO_DRIVERS = settings.SO_DRIVERS


class SOEnv(RobotEnv):
    """SO follower arms (SOArm) and their cameras; see the module docstring for the layout. Arms of
    another kind calibrated as LeRobot calibrates them (Koch's) run in a subclass naming their own."""
    safe_pose = settings.SO_SAFE_POSE
    max_step = settings.SO_MAX_STEP  # raw steps a joint target may move per control step
    what = 'SO arm'

    def _setup_robots(self):
        """Servo set-up (torque off meanwhile), then power on."""
        for arm in self.bots:
            arm.configure()
        self._power_on()

    def _power_on(self):
        """Torque on, holding the present pose, only when every joint is within its calibrated range."""
        for arm in self.bots:
            arm.check_in_range(arm.read_raw()[:, 0])
        for arm in self.bots:
            arm.torque(True)
        self.hold_position()

    @staticmethod
    def _qpos(states):
        return np.concatenate([s.position for s in states])

    @staticmethod
    def _qvel(states):
        return np.concatenate([s.velocity for s in states])

    @staticmethod
    def _effort(states):
        return np.concatenate([s.effort for s in states])

    def _command(self, action):
        """Clamp and send one action (6 * arms,) in calibrated units; targets are kept in raw steps."""
        action = np.asarray(action, dtype=float)
        width = len(settings.SO_JOINTS) * len(self.bots)
        if action.shape != (width,):
            raise ValueError(f'action of shape {action.shape} for {len(self.bots)} {self.what}(s): expected ({width},) '
                             f'({", ".join(so_feature_names(len(self.bots)))})')
        if self._targets is None:
            self._targets = [arm.read_raw()[:, 0].astype(float) for arm in self.bots]
        for i, (arm, part) in enumerate(zip(self.bots, action.reshape(len(self.bots), -1))):
            limits = np.stack([arm.units.low, arm.units.high], axis=1)  # (6, 2)
            self._targets[i] = clamp_arm_targets(arm.units.to_raw(part), self._targets[i], limits, self.max_step)
            arm.command_raw(self._targets[i])

    @staticmethod
    def _hold(arm, state):
        raw = arm.units.to_raw(state.position).astype(float)
        arm.command_raw(raw)
        return raw

    def _reset(self, fake):
        """A new episode: torque back on where the arms are (they are not moved: SO tasks have no start
        pose); the first action is clamped from the present position."""
        if self.watchdog:
            self.watchdog.disarm()
        if not fake:
            self._engaged = True
            self.clock.on_reset()  # a simulated scene starts a new episode; real hardware has nothing to reset
            self._power_on()
        self._targets = None
        return self._first_step()

    def finish_episode(self):
        """The end of a rollout: the arms hold their pose (LeRobot does nothing there either)."""
        self.hold_position()


def check_driver(driver):
    if driver not in SO_DRIVERS:
        raise ValueError(f"--robot_driver {driver}: SO arms are driven by the Feetech driver, or simulated; use "
                         f"{' or '.join(SO_DRIVERS)}")


def open_arms(open_arm, names, role, clock, stack):
    """The arms `names` opened with open_arm(name, role, clock), each closed when `stack` unwinds."""
    arms = []
    for name in names:
        arm = open_arm(name, role, clock)
        stack.callback(arm.close)
        arms.append(arm)
    return arms


def open_so_arms(names, role, clock, stack):
    from real_robot.feetech import open_arm  # feetech-servo-sdk: needed by SO arms only
    return open_arms(open_arm, names, role, clock, stack)


def make_so_env(task_config, camera_names=None, setup_robots=True):
    """The SO task's follower arms and cameras at its rate (tasks.control_hz)."""
    clock = Clock(1 / control_hz(task_config))
    with contextlib.ExitStack() as stack:
        arms = open_so_arms(task_config['followers'], 'follower', clock, stack)
        names = task_config['camera_names'] if camera_names is None else camera_names
        cameras = make_cameras('feetech', names, stack)
        env = SOEnv(arms, cameras, setup_robots=setup_robots)
        stack.pop_all()
    return env


def make_so_leaders(task_config):
    """The SO task's leader arms, set up with torque off (moved by hand)."""
    with contextlib.ExitStack() as stack:
        leaders = open_so_arms(task_config['leaders'], 'leader', Clock(1 / control_hz(task_config)),
                            stack)
        for arm in leaders:
            arm.configure()
        stack.pop_all()
    return leaders


def get_so_action(leaders):
    """Teleoperation action: the leader arms' positions (6 * arms,) in calibrated units."""
    return np.concatenate([arm.read().position for arm in leaders])
