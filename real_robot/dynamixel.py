"""Direct driver: arms on Dynamixel Protocol 2.0 buses through the Dynamixel SDK, no ROS.

One DynamixelBus per USB-serial adapter; a DynamixelBot is one arm on it. State is read with one
sync read of present current, velocity and position for all joints; goals are sent with sync
writes. Every failure names the bus, its port, the servo and the joint.
"""
import glob
import os
import threading
import time

import numpy as np
from dynamixel_sdk import COMM_RX_CORRUPT, COMM_RX_TIMEOUT, COMM_SUCCESS, GroupSyncWrite, PacketHandler, PortHandler

from real_robot import protocol as P
from real_robot import settings
from real_robot.bots import Bot, RobotFault, TransientFault, joint_state

JOINT_LABELS = ('waist', 'shoulder', 'elbow', 'forearm_roll', 'wrist_angle', 'wrist_rotate', 'gripper')
LIST_PORTS_HINT = ('list serial devices with `python -m serial.tools.list_ports -v` '
                   '(ALOHA udev rules name them /dev/ttyDXL_*)')
REBOOT_WAIT_S = 2.0  # a rebooted servo must answer a ping again within this


class ServoError(RobotFault):
    """A servo answered with an error bit set (not worth retrying)."""


class ServoCommError(TransientFault):
    """No reply, a corrupted reply, or the port failed (may be transient)."""


def _comm_words(result, packet_handler):
    if result == COMM_RX_TIMEOUT:
        return 'did not answer (timed out): check its power, cable, ID and the baud rate'
    if result == COMM_RX_CORRUPT:
        return ('sent a corrupted status packet (bad CRC or truncated): check the cable and that '
                'no other program uses the port')
    return packet_handler.getTxRxResult(result).strip()


class _Port(PortHandler):
    """The SDK's serial port with the status-reply timeout from settings."""

    def setPacketTimeout(self, packet_length):
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + settings.SERVO_REPLY_TIMEOUT_MS


class DynamixelBus:
    """One serial port with Protocol 2.0 servos; safe to share between threads."""

    def __init__(self, name, port, baudrate=None, labels=None):
        self.name, self.port = name, port
        self.labels = labels or {}  # servo id -> joint name, for messages
        if not os.path.exists(port):
            present = ', '.join(sorted(glob.glob('/dev/ttyDXL*') + glob.glob('/dev/ttyUSB*'))) or 'none'
            raise RobotFault(f"servo bus '{name}': serial port {port} not found (present: {present}); "
                             f"{LIST_PORTS_HINT}, then set SERVO_PORTS in real_robot/settings.py")
        self._port_handler = _Port(port)
        try:
            self._port_handler.openPort()
        except Exception as e:  # serial.SerialException, OSError (permissions)
            raise RobotFault(f"servo bus '{name}': cannot open serial port {port}: {e}; {LIST_PORTS_HINT} "
                             f"and check that your user is in the dialout group") from e
        baudrate = baudrate or settings.BAUDRATE
        if not self._port_handler.setBaudRate(baudrate):
            raise RobotFault(f"servo bus '{name}': baud rate {baudrate} is not supported on {port}")
        self._packet_handler = PacketHandler(2.0)
        self._lock = threading.RLock()

    def where(self, servo_id):
        label = self.labels.get(servo_id)
        return f"servo {servo_id}{f' ({label})' if label else ''} on bus '{self.name}' ({self.port})"

    def _check(self, servo_id, result, error):
        if result != COMM_SUCCESS:
            raise ServoCommError(f'{self.where(servo_id)} {_comm_words(result, self._packet_handler)}')
        if error:
            hardware = self._hardware_status(servo_id) if error & P.ALERT_BIT else None
            raise ServoError(f'{self.where(servo_id)} reports: {P.describe_status_error(error, hardware)}')

    def _hardware_status(self, servo_id):
        address, _ = P.CONTROL_TABLE['hardware_error_status']
        value, result, _ = self._packet_handler.read1ByteTxRx(self._port_handler, servo_id, address)
        return value if result == COMM_SUCCESS else None

    def ping(self, servo_id):
        """Model number of a servo; raises if it does not answer."""
        with self._lock:
            model, result, error = self._packet_handler.ping(self._port_handler, servo_id)
            self._check(servo_id, result, error)
            return model

    def write(self, servo_id, register, value):
        """Write one register (name from protocol.CONTROL_TABLE) and check the status reply."""
        address, size = P.CONTROL_TABLE[register]
        writer = {1: self._packet_handler.write1ByteTxRx, 2: self._packet_handler.write2ByteTxRx,
                  4: self._packet_handler.write4ByteTxRx}[size]
        with self._lock:
            for attempt in range(settings.SERVO_IO_RETRIES):
                result, error = writer(self._port_handler, servo_id, address, int(value) & ((1 << 8 * size) - 1))
                if result == COMM_SUCCESS or attempt == settings.SERVO_IO_RETRIES - 1:
                    break
            self._check(servo_id, result, error)

    def read(self, servo_id, register):
        address, size = P.CONTROL_TABLE[register]
        with self._lock:
            data, result, error = self._packet_handler.readTxRx(self._port_handler, servo_id, address, size)
            self._check(servo_id, result, error)
            return P.to_signed(int.from_bytes(bytes(data), 'little'), size)

    def sync_write(self, register, values):
        """Write one register of several servos in one packet (no replies). values: {id: int}."""
        address, size = P.CONTROL_TABLE[register]
        group = GroupSyncWrite(self._port_handler, self._packet_handler, address, size)
        for servo_id, value in values.items():
            group.addParam(servo_id, list((int(value) & ((1 << 8 * size) - 1)).to_bytes(size, 'little')))
        with self._lock:
            result = group.txPacket()
        if result != COMM_SUCCESS:
            raise ServoCommError(f"servo bus '{self.name}' ({self.port}): sync write of {register} failed: "
                                 f'{self._packet_handler.getTxRxResult(result)}')

    def sync_read_state(self, servo_ids):
        """(n, 3) int array of present current, velocity, position (raw) with one sync read."""
        ph, port = self._packet_handler, self._port_handler
        out = np.zeros((len(servo_ids), 3), dtype=np.int64)
        with self._lock:
            result = ph.syncReadTx(port, P.STATE_ADDRESS, P.STATE_SIZE, list(servo_ids), len(servo_ids), False)
            if result != COMM_SUCCESS:
                raise ServoCommError(f"servo bus '{self.name}' ({self.port}): sync read could not be sent: "
                                     f'{ph.getTxRxResult(result)}')
            for row, servo_id in enumerate(servo_ids):
                data, result, error = ph.readRx(port, servo_id, P.STATE_SIZE)
                self._check(servo_id, result, error)
                out[row] = P.unpack_state(data)
        return out

    def reboot(self, servo_id):
        with self._lock:
            result, error = self._packet_handler.reboot(self._port_handler, servo_id)
            self._check(servo_id, result, error & ~P.ALERT_BIT)  # the alert is what a reboot clears
            deadline = time.monotonic() + REBOOT_WAIT_S
            while True:
                model, result, _ = self._packet_handler.ping(self._port_handler, servo_id)
                if result == COMM_SUCCESS or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            self._check(servo_id, result, 0)

    def close(self):
        with self._lock:
            self._port_handler.closePort()


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
