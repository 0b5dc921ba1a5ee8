"""A Dynamixel Protocol 2.0 servo bus on a pseudo-terminal, for tests and dry runs.

The emulator opens a pty pair; the driver opens the slave end like a USB-serial adapter and
exchanges real packets with it (header, stuffing, CRC-16, ping / read / write / reboot /
sync read / sync write, status error bits). Each emulated X-series servo has a control table
and a simple motor: with torque on it follows its goal position with a first-order lag.

Faults for tests: `corrupt_replies(n)` spoils the CRC of the next n status packets (-1: all),
`silence(servo_id)` makes a servo stop answering, `set_hardware_error(servo_id, bits)` raises
the alert bit with a Hardware Error Status (and releases torque, as a servo does).

    python -m real_robot.emulator   # prints the port of an arm's bus and serves until Ctrl-C
    python -m real_robot.emulator --ids 1 2 3 4 5 6 --models xl330-m077   # a Koch leader's bus
"""
import os
import select
import struct
import threading
import time
import tty

from real_robot import protocol as P
from real_robot import settings

MODEL = 'xm430-w350'  # ALOHA's arms' servo, the default
FOLLOW_TIME_CONSTANT_S = 0.03  # motor lag behind its goal position
CURRENT_PER_POSITION_ERROR = 0.5  # raw current units per raw position unit of tracking error


class EmulatedServo:
    """One X-series servo: control table bytes plus a first-order motor; its shaft (`_position`) is read
    and commanded through Homing_Offset (Present_Position = shaft position + Homing_Offset)."""

    def __init__(self, servo_id, position=P.POSITION_CENTER, model=MODEL):
        self.id = servo_id
        self.table = bytearray(P.CONTROL_TABLE_SIZE)
        self.silent = False
        self.goal_history = []  # every goal position written, for tests
        self._set('model_number', P.MODEL_NUMBERS[model])
        self._set('id', servo_id)
        self._set('operating_mode', P.OPERATING_MODES['position'])
        self._set('current_limit', 1193)
        self._position = float(position)
        self._set('goal_position', position)
        self._sync_present(0.0)
        self._last_time = time.monotonic()

    def _set(self, name, value):
        address, size = P.CONTROL_TABLE[name]
        self.table[address:address + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, 'little')

    def get(self, name):
        address, size = P.CONTROL_TABLE[name]
        return P.to_signed(int.from_bytes(self.table[address:address + size], 'little'), size)

    @property
    def error_byte(self):
        return P.ALERT_BIT if self.get('hardware_error_status') else 0

    def _sync_present(self, velocity):
        target = self.get('goal_position') - self.get('homing_offset')  # of the shaft
        self._set('present_position', int(round(self._position)) + self.get('homing_offset'))
        self._set('present_velocity', int(round(velocity)))
        torque_on = self.get('torque_enable')
        self._set('present_current', int(round(CURRENT_PER_POSITION_ERROR * (target - self._position)))
                  if torque_on else 0)

    def advance(self):
        """Move the motor for the time passed since the last call."""
        now = time.monotonic()
        dt, self._last_time = now - self._last_time, now
        if not self.get('torque_enable') or dt <= 0:
            self._sync_present(0.0)
            return
        target = self.get('goal_position') - self.get('homing_offset')
        step = (target - self._position) * min(1.0, dt / FOLLOW_TIME_CONSTANT_S)
        self._position += step
        velocity_units = step / dt * P.RAD_PER_POSITION / P.RAD_S_PER_VELOCITY
        self._sync_present(velocity_units)

    def set_present_position(self, position):
        """Move the shaft by hand (a teleoperator holding a leader arm) to read `position`."""
        self._position = float(position) - self.get('homing_offset')
        self._sync_present(0.0)

    def read(self, address, size):
        self.advance()
        return bytes(self.table[address:address + size])

    def write(self, address, data):
        """Write registers; returns a status error number (0: ok)."""
        if address + len(data) > P.CONTROL_TABLE_SIZE:
            return 7
        eeprom = address < P.CONTROL_TABLE['torque_enable'][0]
        if eeprom and self.get('torque_enable'):
            return 7  # EEPROM area is locked while torque is on
        torque_address = P.CONTROL_TABLE['torque_enable'][0]
        if address == torque_address and data[0] and self.get('hardware_error_status'):
            return 7  # a servo in hardware error refuses torque until rebooted
        self.advance()
        self.table[address:address + len(data)] = data
        if address == P.CONTROL_TABLE['goal_position'][0]:
            self.goal_history.append(self.get('goal_position'))
        return 0

    def reboot(self):
        self._set('hardware_error_status', 0)
        self._set('torque_enable', 0)
        self._sync_present(0.0)


class PtyBusEmulator:
    """A servo bus on a pty: a background thread splits what the driver writes into packets
    (protocol.split_packet) and hands each to _handle(), which subclasses implement."""
    protocol = P

    def __init__(self, servos):
        self.servos = servos  # id -> emulated servo (with .silent)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)  # a reply nobody reads overflows and is lost, as on a real bus
        self.port = os.ttyname(self._slave)
        self.instructions = []  # (instruction, id) of every packet received, for tests
        self._corrupt = 0
        self._lock = threading.Lock()
        self._running = True
        self._idle_polls = 0  # polls that found no pending input
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._serve, name=f'servo-bus-emulator {self.port}', daemon=True)
        self._thread.start()

    ### fault injection
    def corrupt_replies(self, count=-1):
        """Spoil the checksum of the next `count` status packets (-1: all of them)."""
        with self._lock:
            self._corrupt = count

    def silence(self, servo_id, silent=True):
        self.servos[servo_id].silent = silent

    def _send(self, packet):
        """Write a status packet, spoilt when corrupt_replies asks for it; when the driver's input
        buffer is full (it stopped reading) the packet is lost."""
        packet = bytearray(packet)
        if self._corrupt:
            packet[-1] ^= 0xFF
            if self._corrupt > 0:
                self._corrupt -= 1
        try:
            os.write(self._master, packet)
        except BlockingIOError:
            pass

    ### serving
    def _serve(self):
        buffer = bytearray()
        while self._running:
            ready, _, _ = select.select([self._master], [], [], 0.02)
            if not ready:
                with self._idle:
                    self._idle_polls += 1
                    self._idle.notify_all()
                continue
            try:
                buffer += os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            while True:
                packet, consumed = self.protocol.split_packet(buffer)
                del buffer[:consumed]
                if packet is None:
                    break
                with self._lock:
                    self._handle(packet)

    def _handle(self, packet):
        raise NotImplementedError

    def _handle_sync(self, reading, address, size, body):
        """A sync read (body: servo IDs; each servo present answers in turn) or a sync write (body:
        per servo its ID and `size` data bytes; no replies)."""
        if reading:
            for servo_id in body:
                if servo_id in self.servos:
                    servo = self.servos[servo_id]
                    self._reply(servo, servo.read(address, size))
            return
        for offset in range(0, len(body) - size, size + 1):
            servo = self.servos.get(body[offset])
            if servo is not None:
                servo.write(address, body[offset + 1:offset + 1 + size])

    def wait_idle(self, timeout=2.0):
        """Return once every byte written to the bus so far has been handled. Writes without a
        reply (sync write, broadcast) are otherwise applied at some later moment."""
        with self._idle:
            # the first empty poll counted after this call may have begun before it; the second has not
            target = self._idle_polls + 2
            if not self._idle.wait_for(lambda: self._idle_polls >= target, timeout):
                raise TimeoutError(f'servo bus emulator on {self.port} still busy after {timeout} s')

    def close(self):
        self._running = False
        self._thread.join(timeout=1.0)
        os.close(self._master)
        os.close(self._slave)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ServoBusEmulator(PtyBusEmulator):
    """Dynamixel X-series servos on one pty."""

    def __init__(self, servo_ids=settings.ARM_SERVO_IDS + (settings.GRIPPER_SERVO_ID,), positions=None, models=None):
        """positions, models: {servo ID: start position, model name of protocol.MODEL_NUMBERS} (default: the
        middle and MODEL)."""
        positions, models = positions or {}, models or {}
        super().__init__({i: EmulatedServo(i, positions.get(i, P.POSITION_CENTER), models.get(i, MODEL))
                          for i in servo_ids})

    def set_hardware_error(self, servo_id, bits):
        with self._lock:
            servo = self.servos[servo_id]
            servo._set('hardware_error_status', bits)
            servo._set('torque_enable', 0)

    def _handle(self, packet):
        try:
            servo_id, instruction, params = P.parse_packet(packet)
        except P.PacketError:
            if packet[4] in self.servos:
                self._reply(self.servos[packet[4]], error=3)
            return
        self.instructions.append((instruction, servo_id))
        if instruction in (P.SYNC_READ, P.SYNC_WRITE):
            address, size = struct.unpack_from('<HH', params)
            self._handle_sync(instruction == P.SYNC_READ, address, size, params[4:])
            return
        targets = list(self.servos.values()) if servo_id == P.BROADCAST_ID else \
            [self.servos[servo_id]] if servo_id in self.servos else []
        for servo in targets:
            self._handle_single(servo, instruction, params, reply=servo_id != P.BROADCAST_ID
                                or instruction == P.PING)

    def _handle_single(self, servo, instruction, params, reply):
        data, error = b'', 0
        if instruction == P.PING:
            data = struct.pack('<HB', servo.get('model_number'), 0x2E)  # model number, firmware version
        elif instruction == P.READ:
            address, size = struct.unpack_from('<HH', params)
            data = servo.read(address, size)
        elif instruction == P.WRITE:
            address = struct.unpack_from('<H', params)[0]
            error = servo.write(address, params[2:])
        elif instruction == P.REBOOT:
            servo.reboot()
        else:
            error = 2
        if reply:
            self._reply(servo, data, error)

    def _reply(self, servo, data=b'', error=0):
        if not servo.silent:
            self._send(P.build_status(servo.id, error | servo.error_byte, data))


def serve_until_interrupted(bus, what):
    """Print the bus's port and keep it served until Ctrl-C (the emulators' command lines)."""
    print(f'Emulated {what} (IDs {sorted(bus.servos)}) on {bus.port}; Ctrl-C to stop')
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        bus.close()


def main(args):
    models = args.get('models') or [MODEL]
    if len(models) not in (1, len(args['ids'])):
        raise SystemExit(f"--models: one model for every servo, or one per --ids entry ({len(args['ids'])}); "
                         f'got {len(models)}')
    by_id = dict(zip(args['ids'], models * len(args['ids']) if len(models) == 1 else models))
    serve_until_interrupted(ServoBusEmulator(tuple(args['ids']), models=by_id), 'Dynamixel bus')


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description='Serve an emulated Dynamixel bus on a pseudo-terminal.')
    parser.add_argument('--ids', type=int, nargs='+', help='servo IDs on the bus',
                        default=list(settings.ARM_SERVO_IDS) + [settings.GRIPPER_SERVO_ID])
    parser.add_argument('--models', nargs='+', choices=sorted(P.MODEL_NUMBERS), metavar='MODEL',
                        help=f'servo model of each ID, or one for all: {", ".join(sorted(P.MODEL_NUMBERS))} '
                             f'(default: {MODEL}, ALOHA\'s)')
    main(vars(parser.parse_args()))
