"""Direct driver: arms on Dynamixel Protocol 2.0 buses through the Dynamixel SDK, no ROS.

One DynamixelBus per USB-serial adapter; a DynamixelBot is one arm on it. State is read with one
sync read of present current, velocity and position for all joints; goals are sent with sync
writes. Every failure names the bus, its port, the servo and the joint.
"""
import time

import dynamixel_sdk

from real_robot import protocol as P
from real_robot import settings
from real_robot.bots import Bot, RobotFault, joint_state
from real_robot.servo_bus import ServoBus

JOINT_LABELS = ('waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate', 'gripper')
REBOOT_WAIT_S = 2.0  # a rebooted servo must answer a ping again within this


class DynamixelBus(ServoBus):
    """One serial port with Protocol 2.0 servos; safe to share between threads."""
    sdk = dynamixel_sdk
    what = 'bus'
    port_globs = ('/dev/ttyDXL*', '/dev/ttyUSB*')
    list_ports_hint = ('list serial devices with `python -m serial.tools.list_ports -v` '
                       '(ALOHA udev rules name them /dev/ttyDXL_*)')
    port_setting = 'SERVO_PORTS in real_robot/settings.py'
    _table = P.CONTROL_TABLE

    def __init__(self, name, port, baudrate=None, labels=None):
        super().__init__(name, port, baudrate or settings.BAUDRATE, labels)

    @staticmethod
    def _packet_handler_of():
        return dynamixel_sdk.PacketHandler(2.0)

    def _encode(self, register, value):
        return int(value) & ((1 << 8 * self._table[register][1]) - 1)

    def _decode(self, register, bits):
        return P.to_signed(bits, self._table[register][1])

    def _error_words(self, servo_id, error):
        hardware = self._hardware_status(servo_id) if error & P.ALERT_BIT else None
        return P.describe_status_error(error, hardware)

    def _hardware_status(self, servo_id):
        address, _ = P.CONTROL_TABLE['hardware_error_status']
        value, result, _ = self._packet_handler.read1ByteTxRx(self._port_handler, servo_id, address)
        return value if result == dynamixel_sdk.COMM_SUCCESS else None

    def _sync_read_tx(self, address, size, servo_ids):
        return self._packet_handler.syncReadTx(self._port_handler, address, size, list(servo_ids), len(servo_ids),
                                               False)

    def sync_read_state(self, servo_ids):
        """(n, 3) int array of present current, velocity, position (raw) with one sync read."""
        return self.sync_read(P.STATE_ADDRESS, P.STATE_SIZE, servo_ids, P.unpack_state)

    def reboot(self, servo_id):
        with self._lock:
            result, error = self._packet_handler.reboot(self._port_handler, servo_id)
            self._check(servo_id, result, error & ~P.ALERT_BIT)  # the alert is what a reboot clears
            deadline = time.monotonic() + REBOOT_WAIT_S
            while True:
                model, result, _ = self._packet_handler.ping(self._port_handler, servo_id)
                if result == dynamixel_sdk.COMM_SUCCESS or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self._check(servo_id, result, 0)


class DynamixelBot(Bot):
    """One Interbotix arm (6 joints + gripper) on its own bus."""

    def __init__(self, name, port, model, clock=None):
        super().__init__()
        self.name, self.model = name, model
        if clock is not None:
            self.clock = clock
        self.arm_ids = tuple(settings.ARM_SERVO_IDS)
        self.gripper_id = settings.GRIPPER_SERVO_ID
        self.ids = self.arm_ids + (self.gripper_id,)
        self.bus = DynamixelBus(name, port, labels=dict(zip(self.ids, JOINT_LABELS)))
        for servo_id in self.ids:
            self.bus.ping(servo_id)

    def _part_ids(self, part):
        return {'arm': self.arm_ids, 'gripper': (self.gripper_id,), 'all': self.ids}[part]

    def read(self):
        raw = self.bus.sync_read_state(self.ids)  # (7, 3): current, velocity, position
        state = joint_state(P.position_to_rad(raw[:, 2]), raw[:, 1] * P.RAD_S_PER_VELOCITY,
                            raw[:, 0] * P.MA_PER_CURRENT, self.model)
        self.last_state = state
        return state

    def command_arm(self, qpos):
        self.bus.sync_write('goal_position', {i: P.rad_to_position(q) for i, q in zip(self.arm_ids, qpos)})

    def command_gripper(self, joint):
        self.bus.sync_write('goal_position', {self.gripper_id: P.rad_to_position(joint)})

    def set_operating_mode(self, part, mode):
        """Torque must be off to change the mode (EEPROM area); the previous torque state is restored."""
        for servo_id in self._part_ids(part):
            was_on = self.bus.read(servo_id, 'torque_enable')
            self.bus.write(servo_id, 'torque_enable', 0)
            self.bus.write(servo_id, 'operating_mode', P.OPERATING_MODES[mode])
            if was_on:
                self.bus.write(servo_id, 'torque_enable', 1)

    def set_current_limit(self, part, limit):
        for servo_id in self._part_ids(part):
            was_on = self.bus.read(servo_id, 'torque_enable')
            self.bus.write(servo_id, 'torque_enable', 0)
            self.bus.write(servo_id, 'current_limit', limit)
            if was_on:
                self.bus.write(servo_id, 'torque_enable', 1)

    def torque(self, enable, part='all'):
        """Torque off goes out first as one sync write (it needs no reply, so it reaches every
        servo even on a failing bus); then every servo confirms with a checked write."""
        ids = self._part_ids(part)
        if not enable:
            self.bus.sync_write('torque_enable', {servo_id: 0 for servo_id in ids})
        failures = []
        for servo_id in ids:
            try:
                self.bus.write(servo_id, 'torque_enable', int(bool(enable)))
            except RobotFault as e:
                failures.append(e)
        if failures:
            raise type(failures[0])('; '.join(str(e) for e in failures))

    def reboot_gripper(self):
        self.bus.reboot(self.gripper_id)
        self.bus.write(self.gripper_id, 'torque_enable', 1)

    def close(self):
        self.bus.close()
