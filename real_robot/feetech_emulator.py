"""An SO arm's Feetech bus (STS3215 servos) on a pseudo-terminal, for tests and dry runs.

The driver opens the slave end like the arm's USB-serial adapter and exchanges real packets with it
(checksums, ping / read / write / sync read / sync write, status error bits, the return delay). Each
servo has its own control table and a simple motor: with torque on it follows its goal position
(clamped to its position limits) with a first-order lag; Present_Position = encoder - Homing_Offset.
A packet with a bad checksum is ignored, as servos do.

Faults for tests: `corrupt_replies(n)` spoils the checksum of the next n status packets (-1: all),
`silence(servo_id)` makes a servo stop answering, `set_error(servo_id, bits)` sets status error bits
(an overload also releases torque, as the servo's protection does); `model_numbers` gives servos
another model.

    python -m real_robot.feetech_emulator   # prints the port of an arm's bus and serves until Ctrl-C
"""
import time

from real_robot import feetech_protocol as F
from real_robot import settings
from real_robot.emulator import PtyBusEmulator, serve_until_interrupted

FOLLOW_TIME_CONSTANT_S = 0.03  # motor lag behind its goal position
MAX_SPEED = 3000  # steps per second (an STS3215 turns about 270 degrees per second)
LOAD_PER_STEP_ERROR = 2.0  # Present_Load units (0.1 %) per step of tracking error
CURRENT_PER_STEP_ERROR = 0.5  # Present_Current units per step of tracking error
RETURN_DELAY_S_PER_UNIT = 2e-6
OVERLOAD_BIT = 32


class EmulatedSTS3215:
    """One STS3215: control table bytes plus a first-order motor on its encoder position."""

    def __init__(self, servo_id, position=F.RESOLUTION // 2, model_number=F.STS3215_MODEL_NUMBER):
        self.id = servo_id
        self.table = bytearray(F.CONTROL_TABLE_SIZE)
        self.silent = False
        self.error = 0  # status error bits set by set_error
        self.goal_history = []  # every goal position written, for tests
        self._encoder = float(position)
        self._last_time = time.monotonic()
        for register, value in (('model_number', model_number), ('id', servo_id), ('return_delay_time', 250),
                                ('max_position_limit', F.RESOLUTION - 1), ('max_torque_limit', 1000),
                                ('p_coefficient', 32), ('d_coefficient', 32), ('acceleration', 0),
                                ('goal_position', int(position))):
            self.set(register, value)
        self._sync_present(0.0)

    def set(self, register, value):
        address, size = F.CONTROL_TABLE[register]
        self.table[address:address + size] = F.encode(register, value).to_bytes(size, 'little')

    def get(self, register):
        address, size = F.CONTROL_TABLE[register]
        return F.decode(register, int.from_bytes(self.table[address:address + size], 'little'))

    def present_of(self, encoder):
        return int(round(encoder - self.get('homing_offset'))) % F.RESOLUTION

    def _target(self):
        """Encoder position the motor heads for: the goal, clamped to the position limits."""
        low, high = self.get('min_position_limit'), self.get('max_position_limit')
        goal = min(max(self.get('goal_position'), low), high) if high > low else self.get('goal_position')
        return goal + self.get('homing_offset')

    def _sync_present(self, velocity):
        error = self._target() - self._encoder if self.get('torque_enable') else 0.0
        self.set('present_position', self.present_of(self._encoder))
        self.set('present_velocity', int(round(velocity)))
        self.set('present_load', int(max(-1000, min(1000, round(LOAD_PER_STEP_ERROR * error)))))
        self.set('present_current', int(min(500, abs(round(CURRENT_PER_STEP_ERROR * error)))))
        self.set('moving', int(abs(velocity) > 1))

    def advance(self):
        """Move the motor for the time passed since the last call."""
        now = time.monotonic()
        dt, self._last_time = now - self._last_time, now
        if not self.get('torque_enable') or dt <= 0:
            self._sync_present(0.0)
            return
        step = (self._target() - self._encoder) * min(1.0, dt / FOLLOW_TIME_CONSTANT_S)
        step = max(-MAX_SPEED * dt, min(MAX_SPEED * dt, step))
        self._encoder += step
        self._sync_present(step / dt)

    def move_by_hand(self, present_position):
        """Turn the shaft (torque off: a teleoperator holding a leader arm) to a Present_Position."""
        self._encoder = present_position + self.get('homing_offset')
        self._sync_present(0.0)

    def read(self, address, size):
        self.advance()
        return bytes(self.table[address:address + size])

    def write(self, address, data):
        """Write registers (the model number and addresses past the table stay as they are)."""
        if address + len(data) > F.CONTROL_TABLE_SIZE or address < F.CONTROL_TABLE['id'][0]:
            return
        self.advance()
        self.table[address:address + len(data)] = data
        if address == F.CONTROL_TABLE['goal_position'][0]:
            self.goal_history.append(self.get('goal_position'))
        self._sync_present(0.0)


class FeetechBusEmulator(PtyBusEmulator):
    """STS3215 servos on one pty; a background thread answers the driver's packets."""
    protocol = F

    def __init__(self, servo_ids=settings.SO_SERVO_IDS, positions=None, model_numbers=None):
        positions, model_numbers = positions or {}, model_numbers or {}
        super().__init__({i: EmulatedSTS3215(i, positions.get(i, F.RESOLUTION // 2),
                                             model_numbers.get(i, F.STS3215_MODEL_NUMBER)) for i in servo_ids})

    ### set-up and fault injection
    def calibrate(self, calibration):
        """Store a calibration (LeRobot's dict) in the servos' registers, as calibration does."""
        for entry in calibration.values():
            servo = self.servos[entry['id']]
            encoder = servo.get('present_position') + servo.get('homing_offset')
            servo.set('homing_offset', entry['homing_offset'])
            servo.set('min_position_limit', entry['range_min'])
            servo.set('max_position_limit', entry['range_max'])
            servo.move_by_hand(servo.present_of(encoder))

    def set_error(self, servo_id, bits):
        with self._lock:
            servo = self.servos[servo_id]
            servo.error = bits
            if bits & OVERLOAD_BIT:
                servo.set('torque_enable', 0)

    ### serving
    def _handle(self, packet):
        try:
            servo_id, instruction, params = F.parse_packet(packet)
        except F.PacketError:
            return  # a servo ignores a packet with a bad checksum
        self.instructions.append((instruction, servo_id))
        if instruction in (F.SYNC_READ, F.SYNC_WRITE):
            self._handle_sync(instruction == F.SYNC_READ, params[0], params[1], params[2:])
        elif servo_id in self.servos:
            self._handle_single(self.servos[servo_id], instruction, params)
        elif servo_id == F.BROADCAST_ID and instruction == F.WRITE:
            for servo in self.servos.values():
                servo.write(params[0], params[1:])

    def _handle_single(self, servo, instruction, params):
        data = b''
        if instruction == F.READ:
            data = servo.read(params[0], params[1])
        elif instruction == F.WRITE:
            servo.write(params[0], params[1:])
        self._reply(servo, data)

    def _reply(self, servo, data=b''):
        if not servo.silent:
            time.sleep(servo.get('return_delay_time') * RETURN_DELAY_S_PER_UNIT)
            self._send(F.build_status(servo.id, servo.error, data))


def main(args):
    serve_until_interrupted(FeetechBusEmulator(tuple(args['ids'])), 'SO-arm bus of STS3215 servos')


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(description='Serve an emulated SO-arm (Feetech) bus on a pseudo-terminal.')
    parser.add_argument('--ids', type=int, nargs='+', default=list(settings.SO_SERVO_IDS), help='servo IDs on the bus')
    main(vars(parser.parse_args()))
