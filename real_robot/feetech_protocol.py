"""Feetech STS protocol (SO-100 / SO-101 arms): packets, checksum, error bits, STS3215 control table.

Packet layout (instruction and status alike):
    FF FF | ID | LEN | INST or ERROR | PARAMS... | CHK
LEN = number of params + 2; CHK = ~(ID + LEN + INST + sum(PARAMS)) & 0xFF. A status packet
carries the servo's error byte where an instruction carries its code. Multi-byte registers are
little-endian on STS servos; some hold sign-magnitude values (SIGN_BITS). A sync write gets no
reply; each servo named in a sync read answers with its own status packet, in the order named.
The driver sends packets through feetech-servo-sdk (scservo_sdk); this module serves the bus
emulator and puts servo errors into words.
"""
import struct

HEADER = b'\xff\xff'
BROADCAST_ID = 0xFE

### Instructions
PING = 0x01
READ = 0x02
WRITE = 0x03
REG_WRITE = 0x04
ACTION = 0x05
SYNC_READ = 0x82
SYNC_WRITE = 0x83

### STS3215 control table: name -> (address, size in bytes)
CONTROL_TABLE = {
    'model_number': (3, 2),
    'id': (5, 1),
    'baud_rate': (6, 1),
    'return_delay_time': (7, 1),  # 2 us per unit
    'min_position_limit': (9, 2),
    'max_position_limit': (11, 2),
    'max_torque_limit': (16, 2),  # 0.1 % of stall torque per unit
    'p_coefficient': (21, 1),
    'd_coefficient': (22, 1),
    'i_coefficient': (23, 1),
    'protection_current': (28, 2),
    'homing_offset': (31, 2),  # Present_Position = encoder position - Homing_Offset
    'operating_mode': (33, 1),
    'overload_torque': (36, 1),  # % of torque kept after an overload
    'torque_enable': (40, 1),
    'acceleration': (41, 1),
    'goal_position': (42, 2),
    'goal_velocity': (46, 2),
    'torque_limit': (48, 2),
    'lock': (55, 1),  # 0: EEPROM writes are kept, 1: locked
    'present_position': (56, 2),
    'present_velocity': (58, 2),
    'present_load': (60, 2),
    'present_voltage': (62, 1),
    'present_temperature': (63, 1),
    'moving': (66, 1),
    'present_current': (69, 2),
    'maximum_acceleration': (85, 1),
}
CONTROL_TABLE_SIZE = 86  # bytes up to and including maximum_acceleration
EEPROM_END = 40  # addresses below torque_enable are EEPROM
# Present position, velocity, load, voltage, temperature, ..., current: one sync read of 56..70
STATE_ADDRESS, STATE_SIZE = 56, 15
SIGN_BITS = {'homing_offset': 11, 'goal_position': 15, 'goal_velocity': 15, 'present_position': 15,
             'present_velocity': 15, 'present_load': 10}  # sign-magnitude registers: their sign bit

OPERATING_MODES = {'position': 0, 'velocity': 1, 'pwm': 2, 'step': 3}
STS3215_MODEL_NUMBER = 777
RESOLUTION = 4096  # encoder steps per turn
MA_PER_CURRENT = 6.5  # STS3215: 6.5 mA per Present_Current unit

### Error bits of a status packet
STATUS_ERRORS = {
    1: 'input voltage error',
    2: 'angle sensor error',
    4: 'overheating',
    8: 'over-current',
    32: 'overload (persistent load beyond the motor torque)',
}


def checksum(body):
    """~(ID + LEN + INST + params) & 0xFF of the bytes after the header."""
    return ~sum(body) & 0xFF


def build_packet(servo_id, instruction, params=b''):
    body = bytes([servo_id, len(params) + 2, instruction]) + bytes(params)
    return HEADER + body + bytes([checksum(body)])


def build_status(servo_id, error=0, params=b''):
    return build_packet(servo_id, error, params)


class PacketError(ValueError):
    """A packet that cannot be parsed (bad checksum)."""


def split_packet(buffer):
    """Find the first whole packet in buffer -> (packet or None, bytes consumed). Bytes before a
    header are skipped; an incomplete packet consumes nothing; the checksum is checked by parse_packet."""
    start = buffer.find(HEADER)
    if start < 0:
        return None, max(0, len(buffer) - 1)
    if len(buffer) < start + 4:
        return None, start
    if buffer[start + 2] == 0xFF:  # FF FF FF: the first FF is noise
        return None, start + 1
    end = start + 4 + buffer[start + 3]
    if buffer[start + 3] < 2:  # cannot hold an instruction and a checksum: not a real header
        return None, start + len(HEADER)
    if len(buffer) < end:
        return None, start
    return bytes(buffer[start:end]), end


def parse_packet(packet):
    """(servo_id, instruction or error byte, params) of one whole packet; PacketError on a bad checksum."""
    body = packet[2:-1]
    if checksum(body) != packet[-1]:
        raise PacketError(f'checksum mismatch (got {packet[-1]:#04x}, computed {checksum(body):#04x})')
    return body[0], body[2], bytes(body[3:])


def describe_status_error(error):
    """Words for the bits set in a status packet's error byte."""
    words = [name for bit, name in STATUS_ERRORS.items() if error & bit]
    unknown = error & ~sum(STATUS_ERRORS)
    if unknown:
        words.append(f'unknown error bits {unknown:#04x}')
    return ', '.join(words) or 'no error'


def encode_sign_magnitude(value, sign_bit):
    """Register bits of a signed value whose sign is bit `sign_bit` (ValueError when it does not fit)."""
    magnitude = abs(int(value))
    if magnitude >= 1 << sign_bit:
        raise ValueError(f'{value} does not fit a sign-magnitude register with the sign at bit {sign_bit}')
    return (1 << sign_bit) | magnitude if value < 0 else magnitude


def decode_sign_magnitude(bits, sign_bit):
    magnitude = bits & ((1 << sign_bit) - 1)
    return -magnitude if bits >> sign_bit & 1 else magnitude


def encode(register, value):
    """Unsigned register bits of a value (sign-magnitude where the register is)."""
    size = CONTROL_TABLE[register][1]
    bits = encode_sign_magnitude(value, SIGN_BITS[register]) if register in SIGN_BITS else int(value)
    if not 0 <= bits < 1 << 8 * size:
        raise ValueError(f'{value} does not fit register {register} ({size} bytes)')
    return bits


def decode(register, bits):
    return decode_sign_magnitude(bits, SIGN_BITS[register]) if register in SIGN_BITS else bits


def unpack_state(data):
    """(position, velocity, load, current) signed raw values from the STATE_SIZE bytes at STATE_ADDRESS."""
    position, velocity, load = struct.unpack_from('<HHH', bytes(data), 0)
    current = struct.unpack_from('<H', bytes(data), CONTROL_TABLE['present_current'][0] - STATE_ADDRESS)[0]
    return (decode('present_position', position), decode('present_velocity', velocity),
            decode('present_load', load), current)
