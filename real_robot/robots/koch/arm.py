"""One Koch arm (follower or leader): six Dynamixel X-series servos on one DynamixelBus, in LeRobot's
calibration files and units (real_robot/lerobot_calibration.py), behind the interface the SO arms'
environment drives (real_robot/so_env.py: read_raw, command_raw, check_in_range, configure, torque).

On Dynamixel servos Present_Position = shaft position + Homing_Offset, and the servo itself mirrors
a joint whose Drive_Mode is reversed, so the units do not mirror it again (LeRobot's apply_drive_mode
False). Every body joint runs in extended position mode and the gripper in current-based position
mode, as LeRobot configures them; the leader's gripper is held at LEADER_GRIPPER_OPEN under current
control, a trigger the operator squeezes.
"""
import numpy as np

from real_robot import protocol as P
from real_robot.bots import Bot, JointState, RobotFault
from real_robot.dynamixel import DynamixelBus
from real_robot.lerobot_calibration import ArmLayout, CalibrationError, Units, load_calibration
from real_robot.robots.koch import settings

LAYOUT = ArmLayout('Koch arm', settings.JOINTS, settings.SERVO_IDS, 'real_robot/robots/koch/settings.py',
                   offset_limit=1 << 20,  # Homing_Offset: -1,044,479 .. 1,044,479
                   how_to_calibrate='calibrate the arm with `python -m real_robot.robots.koch.calibrate` (or copy '
                                    'its LeRobot calibration file there)')
STORED = (('drive_mode', 'drive_mode'), ('homing_offset', 'homing_offset'), ('range_min', 'min_position_limit'),
          ('range_max', 'max_position_limit'))  # calibration key -> the register that holds it


def open_koch_bus(name, port, role):
    """The arm's bus with its six servos checked: each answers a ping with its model's number."""
    bus = DynamixelBus(name, port, settings.BAUDRATE, labels=dict(zip(settings.SERVO_IDS, settings.JOINTS)))
    try:
        for servo_id, model in zip(settings.SERVO_IDS, settings.MODELS[role]):
            found = bus.ping(servo_id)
            if found != P.MODEL_NUMBERS[model]:
                raise RobotFault(f'{bus.where(servo_id)} has model number {found}, expected {P.MODEL_NUMBERS[model]} '
                                 f'({model.upper()}, a Koch {role}): check the servo IDs and the port')
    except BaseException:
        bus.close()
        raise
    return bus


class KochArm(Bot):
    """read() -> JointState of (6,) positions (units), velocities (units/s) and currents (mA) in JOINTS
    order; command_arm(positions (6,)) sends goals for all six joints."""

    def __init__(self, name, port, calibration_path, role='follower', clock=None):
        super().__init__()
        self.name, self.role, self.calibration_path = name, role, calibration_path
        if clock is not None:
            self.clock = clock
        self.calibration = load_calibration(calibration_path, LAYOUT)
        self.units = Units(self.calibration, settings.BODY_UNITS, apply_drive_mode=False)
        self.ids = tuple(settings.SERVO_IDS)
        self.bus = open_koch_bus(name, port, role)
        try:
            self._check_calibration()
        except BaseException:
            self.bus.close()
            raise

    def _check_calibration(self):
        """The file's calibration must be the one the servos hold."""
        differ = []
        for joint, servo_id in zip(settings.JOINTS, self.ids):
            for key, register in STORED:
                value = self.bus.read(servo_id, register)
                if self.calibration[joint][key] != value:
                    differ.append(f'{joint} {key} {self.calibration[joint][key]} in the file, {value} in the servo')
        if differ:
            listed = '; '.join(differ[:3]) + ('; ...' if len(differ) > 3 else '')
            raise RobotFault(f"arm '{self.name}' ({self.bus.port}): the calibration in {self.calibration_path} is not "
                             f'the one stored in the servos ({listed}). If the file belongs to this arm, write it to '
                             f'the servos with `python -m real_robot.robots.koch.calibrate --arm {self.name} '
                             f'--from_file {self.calibration_path}`; otherwise name this arm\'s file in KOCH_ARMS '
                             f'(real_robot/robots/koch/settings.py) or calibrate')

    def configure(self):
        """Servo set-up with torque off (LeRobot's): return delay, extended position mode for the body and
        current-based position for the gripper; the follower's elbow gains. A leader's gripper is then held
        open under current control; everything else stays without torque."""
        self.torque(False)
        for joint, servo_id in zip(settings.JOINTS, self.ids):
            self.bus.write(servo_id, 'return_delay_time', settings.RETURN_DELAY)
            mode = 'current_based_position' if joint == 'gripper' else 'extended_position'
            self.bus.write(servo_id, 'operating_mode', P.OPERATING_MODES[mode])
        elbow = self.ids[settings.JOINTS.index('elbow_flex')]
        if self.role == 'follower':
            for register, value in zip(('position_p_gain', 'position_i_gain', 'position_d_gain'), settings.ELBOW_PID):
                self.bus.write(elbow, register, value)
        else:
            self._hold_gripper_open()

    def _hold_gripper_open(self):
        gripper = settings.JOINTS.index('gripper')
        pose = self.units.to_units(self.read_raw()[:, 0])
        pose[gripper] = settings.LEADER_GRIPPER_OPEN
        self.bus.write(self.ids[gripper], 'goal_position', int(self.units.to_raw(pose)[gripper]))
        self.bus.write(self.ids[gripper], 'torque_enable', 1)

    def read_raw(self):
        """(6, 4) raw present position, velocity, load (none on these servos) and current."""
        current, velocity, position = self.bus.sync_read_state(self.ids).T  # (6,) each
        return np.stack([position, velocity, np.zeros_like(position), current], axis=1)

    def read(self):
        raw = self.read_raw()
        radians_per_second = raw[:, 1] * P.RAD_S_PER_VELOCITY
        steps_per_second = radians_per_second / P.RAD_PER_POSITION
        state = JointState(self.units.to_units(raw[:, 0]), steps_per_second * self.units.per_step(),
                           raw[:, 3] * P.MA_PER_CURRENT)
        self.last_state = state
        return state

    def check_in_range(self, raw_positions):
        """RobotFault naming the joint when a position is further than RANGE_MARGIN outside its range."""
        for joint, position, low, high in zip(settings.JOINTS, raw_positions, self.units.low, self.units.high):
            if not low - settings.RANGE_MARGIN <= position <= high + settings.RANGE_MARGIN:
                raise RobotFault(f"arm '{self.name}': {joint} is at {int(position)} steps, outside its calibrated "
                                 f'range {int(low)}..{int(high)} ({self.calibration_path}); nothing was moved. Move '
                                 f'it into its range by hand, or calibrate again if the file is not this arm\'s')

    def command_raw(self, raw):
        """Goal positions (6,) in raw steps, clamped to the calibrated range (extended position mode
        ignores the servos' own limits)."""
        raw = np.clip(np.round(raw), self.units.low, self.units.high).astype(int)
        self.bus.sync_write('goal_position', dict(zip(self.ids, raw.tolist())))

    def command_arm(self, qpos):
        self.command_raw(self.units.to_raw(qpos))

    def torque(self, enable, part='all'):
        """Torque off goes out first as one sync write, so that it reaches every servo even on a failing
        bus; then every servo confirms with a checked write."""
        if not enable:
            self.bus.sync_write('torque_enable', {servo_id: 0 for servo_id in self.ids})
        failures = []
        for servo_id in self.ids:
            try:
                self.bus.write(servo_id, 'torque_enable', int(bool(enable)))
            except RobotFault as e:
                failures.append(e)
        if failures:
            raise type(failures[0])('; '.join(str(e) for e in failures))

    def close(self):
        """A leader's held gripper is released first (best effort: the port closes whatever happens)."""
        try:
            if self.role == 'leader':
                self.bus.sync_write('torque_enable', {servo_id: 0 for servo_id in self.ids})
        finally:
            self.bus.close()


def open_arm(name, role, clock=None):
    """The Koch arm `name` of KOCH_ARMS (its port and calibration file)."""
    if name not in settings.KOCH_ARMS:
        raise KeyError(f"unknown Koch arm '{name}': known arms are {', '.join(sorted(settings.KOCH_ARMS))} "
                       f'(KOCH_ARMS in real_robot/robots/koch/settings.py)')
    arm = settings.KOCH_ARMS[name]
    try:
        return KochArm(name, arm['port'], arm['calibration'], role=role, clock=clock)
    except CalibrationError as e:  # a file to fix, not a fault of the hardware: one line, no torque was on
        raise CalibrationError(f"arm '{name}': {e}") from None
