"""One serial port of servos through a Dynamixel-SDK-style library, shared by both drivers.

dynamixel_sdk (Dynamixel Protocol 2.0) and scservo_sdk (Feetech STS) have the same API: a
PortHandler, a packet handler with ping / readTxRx / writeTxRx, GroupSyncWrite and COMM_* results.
ServoBus opens the port (every failure says which port and how to list ports), writes with retries,
checks every reply and names the servo and its joint; subclasses give the SDK, the control table
and the error words.
"""
import contextlib
import glob
import os
import threading

import numpy as np

from real_robot import settings
from real_robot.bots import RobotFault, TransientFault

try:
    from termios import error as TermiosError  # what pyserial raises for a port that went away (POSIX)
except ImportError:  # no termios on this OS
    TermiosError = OSError
PORT_ERRORS = (OSError, TermiosError)  # serial.SerialException is an OSError


class ServoError(RobotFault):
    """A servo answered with an error bit set (not worth retrying)."""


class ServoCommError(TransientFault):
    """No reply, a corrupted reply, or the port failed (may be transient)."""


def _reply_timeout(port_handler, packet_length):
    """The SDK's status-reply timeout with settings.SERVO_REPLY_TIMEOUT_MS beyond the transfer time."""
    port_handler.packet_start_time = port_handler.getCurrentTime()
    port_handler.packet_timeout = port_handler.tx_time_per_byte * packet_length + settings.SERVO_REPLY_TIMEOUT_MS


class ServoBus:
    """One serial port with servos; safe to share between threads. Subclasses set the class
    attributes and implement _packet_handler_of, _table, _encode, _decode, _error_words."""
    sdk = None  # dynamixel_sdk or scservo_sdk
    what = 'servo bus'  # how messages name the bus
    port_globs = ()  # serial devices listed when the port is missing
    list_ports_hint = 'list serial devices with `python -m serial.tools.list_ports -v`'
    port_setting = ''  # where the user sets the port
    timeout_advice = 'check its power, cable, ID and the baud rate'

    def __init__(self, name, port, baudrate, labels=None):
        self.name, self.port = name, port
        self.labels = labels or {}  # servo id -> joint name, for messages
        if not os.path.exists(port):
            present = ', '.join(sorted(sum((glob.glob(pattern) for pattern in self.port_globs), []))) or 'none'
            raise RobotFault(f"{self.what} '{name}': serial port {port} not found (present: {present}); "
                             f'{self.list_ports_hint}, then set {self.port_setting}')
        self._port_handler = self.sdk.PortHandler(port)
        self._port_handler.setPacketTimeout = lambda length: _reply_timeout(self._port_handler, length)
        try:
            self._port_handler.openPort()
        except Exception as e:  # serial.SerialException, OSError (permissions)
            raise RobotFault(f"{self.what} '{name}': cannot open serial port {port}: {e}; {self.list_ports_hint} "
                             f'and check that your user is in the dialout group') from e
        if not self._port_handler.setBaudRate(baudrate):
            raise RobotFault(f"{self.what} '{name}': baud rate {baudrate} is not supported on {port}")
        self._packet_handler = self._packet_handler_of()
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def _port(self):
        """The bus's lock around calls on the port; a port that fails (unplugged, powered off) is a
        RobotFault naming it, and the port is left free for the safe stop's commands."""
        with self._lock:
            try:
                yield
            except PORT_ERRORS as e:
                self._port_handler.is_using = False  # the SDK never cleared it: the next call would refuse
                raise RobotFault(f"{self.what} '{self.name}': serial port {self.port} failed ({e}): unplugged or "
                                 f'powered off? {self.list_ports_hint}') from e

    def where(self, servo_id):
        label = self.labels.get(servo_id)
        return f"servo {servo_id}{f' ({label})' if label else ''} on {self.what} '{self.name}' ({self.port})"

    def _comm_words(self, result):
        if result == self.sdk.COMM_RX_TIMEOUT:
            return f'did not answer (timed out): {self.timeout_advice}'
        if result == self.sdk.COMM_RX_CORRUPT:
            return ('sent a corrupted status packet (bad checksum or truncated): check the cable and that '
                    'no other program uses the port')
        return self._packet_handler.getTxRxResult(result).strip()

    def _check(self, servo_id, result, error):
        if result != self.sdk.COMM_SUCCESS:
            self._port_handler.ser.reset_input_buffer()  # replies still coming must not pass for the next ones
            raise ServoCommError(f'{self.where(servo_id)} {self._comm_words(result)}')
        if error:
            raise ServoError(f'{self.where(servo_id)} reports: {self._error_words(servo_id, error)}')

    def ping(self, servo_id):
        """Model number of a servo; raises if it does not answer."""
        with self._port():
            model, result, error = self._packet_handler.ping(self._port_handler, servo_id)
            self._check(servo_id, result, error)
            return model

    def _bytes(self, register, value):
        address, size = self._table[register]
        return address, size, list(self._encode(register, value).to_bytes(size, 'little'))

    def write(self, servo_id, register, value):
        """Write one register (a name of the control table) and check the status reply."""
        address, size, data = self._bytes(register, value)
        with self._port():
            for attempt in range(settings.SERVO_IO_RETRIES):
                result, error = self._packet_handler.writeTxRx(self._port_handler, servo_id, address, size, data)
                if result == self.sdk.COMM_SUCCESS or attempt == settings.SERVO_IO_RETRIES - 1:
                    break
            self._check(servo_id, result, error)

    def read(self, servo_id, register):
        address, size = self._table[register]
        with self._port():
            data, result, error = self._packet_handler.readTxRx(self._port_handler, servo_id, address, size)
            self._check(servo_id, result, error)
            return self._decode(register, int.from_bytes(bytes(data), 'little'))

    def sync_write(self, register, values):
        """Write one register of several servos in one packet (no replies). values: {id: int}."""
        address, size = self._table[register]
        group = self.sdk.GroupSyncWrite(self._port_handler, self._packet_handler, address, size)
        for servo_id, value in values.items():
            group.addParam(servo_id, self._bytes(register, value)[2])
        with self._port():
            result = group.txPacket()
        if result != self.sdk.COMM_SUCCESS:
            raise ServoCommError(f"{self.what} '{self.name}' ({self.port}): sync write of {register} failed: "
                                 f'{self._packet_handler.getTxRxResult(result)}')

    def _sync_read_tx(self, address, size, servo_ids):
        return self._packet_handler.syncReadTx(self._port_handler, address, size, list(servo_ids), len(servo_ids))

    def sync_read(self, address, size, servo_ids, unpack):
        """One sync read of `size` bytes at `address` from every servo (each answers with its own
        status packet) -> (n, k) int array of unpack(bytes) per servo."""
        rows = []
        with self._port():
            result = self._sync_read_tx(address, size, servo_ids)
            if result != self.sdk.COMM_SUCCESS:
                raise ServoCommError(f"{self.what} '{self.name}' ({self.port}): sync read could not be sent: "
                                     f'{self._packet_handler.getTxRxResult(result)}')
            for servo_id in servo_ids:
                data, result, error = self._packet_handler.readRx(self._port_handler, servo_id, size)
                self._check(servo_id, result, error)
                rows.append(unpack(data))
        return np.array(rows, dtype=np.int64)

    def close(self):
        with self._lock, contextlib.suppress(*PORT_ERRORS):  # a port that went away is closed already
            self._port_handler.closePort()
