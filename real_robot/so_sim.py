"""Driver 'sim' for SO tasks: the simulated SO-101 (so101_sim/) behind the SO arm's interface.

SimSOArm is an SOArm (real_robot/feetech.py) whose servos are the simulated joints: it reads and
commands raw encoder steps through a calibration in LeRobot's layout (each body joint's zero, the
middle of its range in the model, at step 2048; wrist_roll over the whole turn as on the real arm;
the gripper's range its joint range), so SOEnv's units and safety layer (calibrated-range and
per-step clamps, the range check before torque on) run unchanged, and a policy sees the numbers the
real arm gives. The rig's clock steps the physics at each control step (no sleeping); each reset
places the cube anew. Cameras: the scene's 'front' and 'wrist'.
"""
import numpy as np

from real_robot import settings
from real_robot.bots import Clock
from real_robot.feetech import SOArm
from real_robot.lerobot_calibration import Units
from real_robot.sim_robot import SimCameraSet, SimRig
from real_robot.so_env import SOEnv, check_driver, make_so_env

STEPS_PER_TURN = 4096
MID_STEP = 2048  # the raw step of a body joint's model zero
STEPS_PER_RADIAN = STEPS_PER_TURN / (2 * np.pi)
SIM_TASK = 'sim_so101_pick_place'  # the scene the simulated arm works in


def sim_calibration(low, high):
    """LeRobot-style calibration {joint: {...}} of joints whose ranges are low..high (6,) radians."""
    calibration = {}
    for i, joint in enumerate(settings.SO_JOINTS):
        if joint == settings.SO_FULL_TURN_JOINT:
            steps = (0, STEPS_PER_TURN - 1)
        elif joint == 'gripper':
            steps = (MID_STEP + low[i] * STEPS_PER_RADIAN, MID_STEP + high[i] * STEPS_PER_RADIAN)
        else:  # symmetric about the model's zero, so that the calibrated degrees read 0 there
            half = max(-low[i], high[i]) * STEPS_PER_RADIAN
            steps = (MID_STEP - half, MID_STEP + half)
        calibration[joint] = {'id': settings.SO_SERVO_IDS[i], 'drive_mode': 0, 'homing_offset': 0,
                              'range_min': int(round(steps[0])), 'range_max': int(round(steps[1]))}
    return calibration


class SORig(SimRig):
    """The simulated scene and the clock that steps it (SimRig's stepping, resets and rendering): one
    tick per control step, as fast as the CPU allows, or with realtime=True also paced at the control
    rate (teleoperation with a leader arm)."""

    def __init__(self, image_size=None, realtime=False):  # noqa: SimRig's arms and cameras are not these
        from simulation import make_sim_env
        self.env = make_sim_env(SIM_TASK, camera_names=[], shadows=False)
        self.dt = self.env.control_timestep()
        self.realtime = realtime
        self._pace = Clock(self.dt) if realtime else None
        self.image_size = tuple(image_size or settings.CAMERA_HW)
        self.ticks = 0
        self._start(self.env.reset())

    def tick(self):
        super().tick()
        if self._pace:
            self._pace.tick()

    @property
    def missed(self):
        """Ticks that came after their deadline (realtime only)."""
        return self._pace.missed if self._pace else 0

    def radians(self):
        """(6,) joint positions and (6,) velocities of the simulated arm, radians."""
        data, joints = self.env.physics.data, len(settings.SO_JOINTS)
        return data.qpos[:joints].copy(), data.qvel[:joints].copy()


class SimSOArm(SOArm):
    """The simulated arm as an SOArm: raw steps in and out, no bus."""

    def __init__(self, rig, name, role='follower'):  # noqa: the bus SOArm opens is the rig here
        self.last_state = None
        self.rig, self.clock, self.name, self.role = rig, rig, name, role
        units = rig.env.task.units
        self.calibration_path = f'the simulated arm ({SIM_TASK})'
        self.calibration = sim_calibration(units.low, units.high)
        self.units = Units(self.calibration, settings.SO_BODY_UNITS)
        self.ids = tuple(settings.SO_SERVO_IDS)
        self._torque = False

    def configure(self):
        """The simulated servos need no set-up; torque stays off as on the real arm."""
        self._torque = False

    def read_raw(self):
        """(6, 4) raw present position, velocity (steps/s), load and current (none)."""
        position, velocity = self.rig.radians()
        return np.stack([MID_STEP + position * STEPS_PER_RADIAN, velocity * STEPS_PER_RADIAN,
                         np.zeros(6), np.zeros(6)], axis=1)

    def command_raw(self, raw):
        """Goal positions (6,) in raw steps, clamped to the calibrated range; ignored without torque (the
        simulated arm then keeps its last target: it does not sag)."""
        if self._torque:
            raw = np.clip(np.round(raw), self.units.low, self.units.high)
            self.rig.target = self.rig.env.task.units.to_units((raw - MID_STEP) / STEPS_PER_RADIAN)

    def torque(self, enable, part='all'):
        self._torque = bool(enable)

    def close(self):
        """Nothing to release."""


def make_sim_so_env(task_config, camera_names=None, image_size=None, realtime=False):
    """An SOEnv on the simulated SO-101: the task's one follower arm and its cameras (realtime: as SORig)."""
    from so101_sim.env import CAMERA_NAMES
    if len(task_config['followers']) != 1:
        raise ValueError(f"--robot_driver sim: the simulated SO-101 scene has one arm; this task has "
                         f"{len(task_config['followers'])} followers ({', '.join(task_config['followers'])})")
    names = task_config['camera_names'] if camera_names is None else camera_names
    unknown = [name for name in names if name not in CAMERA_NAMES]
    if unknown:
        raise KeyError(f"--robot_driver sim: no simulated camera '{unknown[0]}' in the SO-101 scene; it has "
                       f"{', '.join(CAMERA_NAMES)}")
    rig = SORig(image_size, realtime)
    arm = SimSOArm(rig, task_config['followers'][0])
    return SOEnv([arm], SimCameraSet(rig, names, {name: name for name in CAMERA_NAMES}))


def make_so_followers(task_config, driver='auto', camera_names=None, image_size=None, realtime=False):
    """The SO task's follower arms by --robot_driver: the Feetech servos, or ('sim') the simulated arm."""
    check_driver(driver)
    if driver == 'sim':
        return make_sim_so_env(task_config, camera_names, image_size, realtime)
    return make_so_env(task_config, camera_names)
