"""One Koch arm (follower or leader): six Dynamixel X-series servos on one DynamixelBus, a LeRobotArm
(real_robot/lerobot_arm.py: LeRobot's calibration files and units, the range clamps, torque off on a
failing bus) as the SO arms' environment drives it (real_robot/so_env.py).

On Dynamixel servos Present_Position = shaft position + Homing_Offset, and the servo itself mirrors
a joint whose Drive_Mode is reversed, so the units do not mirror it again (LeRobot's apply_drive_mode
False). Every body joint runs in extended position mode and the gripper in current-based position
mode, as LeRobot configures them; the leader's gripper is held at LEADER_GRIPPER_OPEN under current
control, a trigger the operator squeezes.
"""
import numpy as np

from real_robot import protocol as P
from real_robot.bots import RobotFault
from real_robot.dynamixel import DynamixelBus
from real_robot.lerobot_arm import LeRobotArm, open_listed_arm
from real_robot.lerobot_calibration import ArmLayout, Units, load_calibration
from real_robot.robots.koch import settings

LAYOUT = ArmLayout('Koch arm', settings.JOINTS, settings.SERVO_IDS, 'real_robot/robots/koch/settings.py',
                   offset_limit=1 << 20,  # Homing_Offset: -1,044,479 .. 1,044,479
                   how_to_calibrate='calibrate the arm with `python -m real_robot.robots.koch.calibrate` (or copy '
                                    'its LeRobot calibration file there)')
# Present_Current -> mA by servo model: XL330s sense current in 1 mA units; the XL430 senses load instead
MA_PER_CURRENT_UNIT = {'xl330-m288': 1.0, 'xl330-m077': 1.0, 'xl430-w250': 0.0}
STORED = (('drive_mode', 'drive_mode'), ('homing_offset', 'homing_offset'), ('range_min', 'min_position_limit'),
          ('range_max', 'max_position_limit'))  # calibration key -> the register that holds it


class KochBus(DynamixelBus):
    """A Koch arm's adapter: its messages name KOCH_ARMS and the USB serial devices the arms appear as."""
    what = 'arm'
    port_globs = ('/dev/ttyACM*', '/dev/ttyUSB*')
    list_ports_hint = ('list serial devices with `python -m serial.tools.list_ports -v` '
                       '(Koch arms appear as /dev/ttyACM* or /dev/ttyUSB*)')
    port_setting = 'its port in KOCH_ARMS in real_robot/robots/koch/settings.py'
    timeout_advice = 'check its power and cable, and its servo IDs (1..6) and baud rate (1 Mbps, as LeRobot sets them)'


def open_koch_bus(name, port, role):
    """The arm's bus with its six servos checked: each answers a ping with its model's number."""
    bus = KochBus(name, port, settings.BAUDRATE, labels=dict(zip(settings.SERVO_IDS, settings.JOINTS)))
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


class KochArm(LeRobotArm):
    """read() -> JointState of (6,) positions (units), velocities (units/s) and currents (mA; 0 for the
    XL430 servos, which sense load, not current) in JOINTS order; command_arm(positions (6,)) sends
    goals for all six joints (clamped to the calibrated range: extended position mode ignores the
    servos' own limits)."""
    stored = STORED
    steps_per_velocity_unit = P.RAD_S_PER_VELOCITY / P.RAD_PER_POSITION

    def __init__(self, name, port, calibration_path, role='follower', clock=None):
        super().__init__()
        self.name, self.role, self.calibration_path = name, role, calibration_path
        if clock is not None:
            self.clock = clock
        self.calibration = load_calibration(calibration_path, LAYOUT)
        self.units = Units(self.calibration, settings.BODY_UNITS, apply_drive_mode=False)
        self.ids = tuple(settings.SERVO_IDS)
        self.ma_per_current_unit = np.array([MA_PER_CURRENT_UNIT[model] for model in settings.MODELS[role]])
        self.connect(open_koch_bus(name, port, role))

    @property
    def range_margin(self):
        return settings.RANGE_MARGIN

    def write_hint(self):
        return f'python -m real_robot.robots.koch.calibrate --arm {self.name} --from_file {self.calibration_path}'

    def settings_hint(self):
        return 'KOCH_ARMS (real_robot/robots/koch/settings.py)'

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

    def close(self):
        """A leader's held gripper is released first (best effort: the port closes whatever happens)."""
        try:
            if self.role == 'leader':
                self.bus.sync_write('torque_enable', {servo_id: 0 for servo_id in self.ids})
        finally:
            self.bus.close()


def open_arm(name, role, clock=None):
    """The Koch arm `name` of KOCH_ARMS (its port and calibration file)."""
    return open_listed_arm(KochArm, settings.KOCH_ARMS, 'KOCH_ARMS in real_robot/robots/koch/settings.py', name, role,
                           clock)
