"""Direct driver of SO-100 / SO-101 arms: six Feetech STS3215 servos per arm through feetech-servo-sdk.

A FeetechBus is one USB-serial adapter; an SOArm is the arm on it, with its calibration. State is
read with one sync read of present position, velocity, load and current for all six servos; goals
go out as one sync write. Every failure names the arm, its port, the servo ID and the joint.

Units and calibration files are LeRobot's (real_robot/lerobot_calibration.py), so that a LeRobot
calibration file and the values of a LeRobot SO dataset are used as they are (settings.SO_BODY_UNITS).
Present_Position = encoder position - Homing_Offset; the range is in Present_Position steps and is
also written to the servos' position-limit registers, so the servo itself refuses to go past it.
"""
import scservo_sdk

from real_robot import feetech_protocol as F
from real_robot import lerobot_calibration, settings
from real_robot.bots import RobotFault
from real_robot.lerobot_arm import LeRobotArm, open_listed_arm
from real_robot.lerobot_calibration import ArmLayout, Units
from real_robot.servo_bus import ServoBus


class FeetechBus(ServoBus):
    """One serial port with STS servos (an SO arm's adapter); safe to share between threads."""
    sdk = scservo_sdk
    what = 'arm'
    port_globs = ('/dev/ttyACM*', '/dev/ttyUSB*')
    list_ports_hint = ('list serial devices with `python -m serial.tools.list_ports -v` '
                       '(SO arms appear as /dev/ttyACM* or /dev/ttyUSB*)')
    port_setting = 'its port in SO_ARMS in real_robot/settings.py'
    timeout_advice = ('check its power and cable, and its ID and baud rate (a new servo has ID 1: '
                      'set each one up alone)')
    _table = F.CONTROL_TABLE

    def __init__(self, name, port, baudrate=None, labels=None):
        super().__init__(name, port, baudrate or settings.SO_BAUDRATE, labels)

    @staticmethod
    def _packet_handler_of():
        return scservo_sdk.PacketHandler(0)  # 0: STS servos, little-endian registers

    @staticmethod
    def _encode(register, value):
        return F.encode(register, value)

    @staticmethod
    def _decode(register, bits):
        return F.decode(register, bits)

    @staticmethod
    def _error_words(servo_id, error):
        return F.describe_status_error(error)

    def sync_read_state(self, servo_ids):
        """(n, 4) int array of present position, velocity, load and current (raw) with one sync read."""
        return self.sync_read(F.STATE_ADDRESS, F.STATE_SIZE, servo_ids, F.unpack_state)


### calibration files
SO_LAYOUT = ArmLayout('SO arm', settings.SO_JOINTS, settings.SO_SERVO_IDS, 'settings.SO_SERVO_IDS',
                      offset_limit=1 << F.SIGN_BITS['homing_offset'],
                      how_to_calibrate='calibrate the arm with `python -m real_robot.calibrate` (or copy its '
                                       'LeRobot calibration file there)')


def load_calibration(path):
    """LeRobot's calibration JSON of an SO arm, checked (lerobot_calibration.load_calibration)."""
    return lerobot_calibration.load_calibration(path, SO_LAYOUT)


### the arm
def open_so_bus(name, port):
    """An SO arm's bus with its six servos checked: each answers a ping with STS3215's model number."""
    bus = FeetechBus(name, port, labels=dict(zip(settings.SO_SERVO_IDS, settings.SO_JOINTS)))
    try:
        for servo_id in settings.SO_SERVO_IDS:
            model = bus.ping(servo_id)
            if model != F.STS3215_MODEL_NUMBER:
                raise RobotFault(f'{bus.where(servo_id)} has model number {model}, expected '
                                 f'{F.STS3215_MODEL_NUMBER} (STS3215): check the servo IDs and the port')
    except BaseException:
        bus.close()
        raise
    return bus


class SOArm(LeRobotArm):
    """One SO-100 / SO-101 arm (5 joints and a gripper) on its own bus, in calibrated units.

    read() -> JointState of (6,) positions (units), velocities (units/s) and currents (mA), in
    settings.SO_JOINTS order; command_arm(positions (6,)) sends goals for all six joints."""
    stored = (('homing_offset', 'homing_offset'), ('range_min', 'min_position_limit'),
              ('range_max', 'max_position_limit'))
    ma_per_current_unit = F.MA_PER_CURRENT

    def __init__(self, name, port, calibration_path, role='follower', clock=None, body_units=None):
        super().__init__()
        self.name, self.role, self.calibration_path = name, role, calibration_path
        if clock is not None:
            self.clock = clock
        self.calibration = load_calibration(calibration_path)
        self.units = Units(self.calibration, body_units or settings.SO_BODY_UNITS)
        self.ids = tuple(settings.SO_SERVO_IDS)
        self.connect(open_so_bus(name, port))

    @property
    def range_margin(self):
        return settings.SO_RANGE_MARGIN

    def write_hint(self):
        return (f'python -m real_robot.calibrate --role {self.role} --port {self.bus.port} '
                f'--from_file {self.calibration_path}')

    def settings_hint(self):
        return 'SO_ARMS (real_robot/settings.py)'

    def configure(self):
        """Servo set-up with torque off (LeRobot's values): return delay, acceleration, position mode; the
        PID gains and the gripper's torque and current limits on followers. Torque stays off."""
        self.torque(False)
        for joint, servo_id in zip(settings.SO_JOINTS, self.ids):
            self.bus.write(servo_id, 'return_delay_time', settings.SO_RETURN_DELAY)
            self.bus.write(servo_id, 'maximum_acceleration', settings.SO_ACCELERATION)
            self.bus.write(servo_id, 'acceleration', settings.SO_ACCELERATION)
            self.bus.write(servo_id, 'operating_mode', F.OPERATING_MODES['position'])
            if self.role != 'follower':
                continue
            for register, value in zip(('p_coefficient', 'i_coefficient', 'd_coefficient'), settings.SO_POSITION_PID):
                self.bus.write(servo_id, register, value)
            if joint == 'gripper':
                self.bus.write(servo_id, 'max_torque_limit', settings.SO_GRIPPER_MAX_TORQUE)
                self.bus.write(servo_id, 'protection_current', settings.SO_GRIPPER_PROTECTION_CURRENT)
                self.bus.write(servo_id, 'overload_torque', settings.SO_GRIPPER_OVERLOAD_TORQUE)

    def read_raw(self):
        """(6, 4) raw present position, velocity, load, current."""
        return self.bus.sync_read_state(self.ids)

    def switch_torque(self, servo_id, enable):
        """Torque and the EEPROM lock together (as LeRobot): on + locked, or off + unlocked."""
        self.bus.write(servo_id, 'torque_enable', int(bool(enable)))
        self.bus.write(servo_id, 'lock', int(bool(enable)))


def open_arm(name, role, clock=None):
    """The SO arm `name` of settings.SO_ARMS (its port and calibration file)."""
    return open_listed_arm(SOArm, settings.SO_ARMS, 'SO_ARMS in real_robot/settings.py', name, role, clock)
