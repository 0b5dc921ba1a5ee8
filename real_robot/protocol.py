"""Dynamixel Protocol 2.0: packets, CRC, byte stuffing, error words, X-series control table, units.

Packet layout (instruction and status alike):
    FF FF FD 00 | ID | LEN_L LEN_H | INST | PARAMS... | CRC_L CRC_H
LEN counts the bytes after itself (INST + stuffed PARAMS + 2 CRC bytes). A status packet's INST is
0x55 and its first parameter is the error byte. Inside INST..PARAMS any FF FF FD is sent as
FF FF FD FD ("byte stuffing") so that it cannot be taken for a header. The CRC is CRC-16 with
polynomial 0x8005 (initial value 0, no reflection) over every byte before it, stuffing included.
The servo driver sends packets through the Dynamixel SDK; this module is used by the servo-bus
emulator and to put servo errors into words.
"""
import math
import struct

HEADER = b'\xff\xff\xfd\x00'
BROADCAST_ID = 0xFE

### Instructions
PING = 0x01
READ = 0x02
WRITE = 0x03
REBOOT = 0x08
STATUS = 0x55
SYNC_READ = 0x82
SYNC_WRITE = 0x83

### X-series (XM430 / XM540 / XL430 / XL330) control table: name -> (address, size in bytes)
CONTROL_TABLE = {
    'model_number': (0, 2),
    'id': (7, 1),
    'return_delay_time': (9, 1),
    'drive_mode': (10, 1),
    'operating_mode': (11, 1),
    'homing_offset': (20, 4),  # Present_Position = actual position + Homing_Offset
    'current_limit': (38, 2),
    'max_position_limit': (48, 4),
    'min_position_limit': (52, 4),
    'torque_enable': (64, 1),
    'hardware_error_status': (70, 1),
    'position_d_gain': (80, 2),
    'position_i_gain': (82, 2),
    'position_p_gain': (84, 2),
    'goal_current': (102, 2),
    'goal_position': (116, 4),
    'present_current': (126, 2),
    'present_velocity': (128, 4),
    'present_position': (132, 4),
}
CONTROL_TABLE_SIZE = 147  # bytes up to and including present temperature
# One sync read of present current (2), velocity (4) and position (4): addresses 126..135
STATE_ADDRESS, STATE_SIZE = 126, 10

MODEL_NUMBERS = {'xm430-w350': 1020, 'xl430-w250': 1060, 'xl330-m077': 1190, 'xl330-m288': 1200}  # ping's answer
OPERATING_MODES = {'current': 0, 'velocity': 1, 'position': 3, 'extended_position': 4,
                   'current_based_position': 5, 'pwm': 16}

### Units
POSITION_CENTER = 2048  # register value of joint angle 0
RAD_PER_POSITION = 2 * math.pi / 4096
RAD_S_PER_VELOCITY = 0.229 * 2 * math.pi / 60  # 0.229 rpm per unit
MA_PER_CURRENT = 2.69  # XM430-W350 / XM540-W270: 2.69 mA per unit

### Error words
STATUS_ERRORS = {  # low 7 bits of a status packet's error byte
    1: 'result fail (the instruction failed)',
    2: 'instruction error (undefined instruction, or action without reg write)',
    3: 'CRC error (the servo received a corrupted packet)',
    4: 'data range error (value outside the register range)',
    5: 'data length error (too short for the register)',
    6: 'data limit error (value beyond a configured limit)',
    7: 'access error (register is read-only, write-only, or EEPROM with torque on)',
}
ALERT_BIT = 0x80  # hardware error: details in the Hardware Error Status register
HARDWARE_ERRORS = {  # bits of the Hardware Error Status register (address 70)
    0: 'input voltage error',
    2: 'overheating',
    3: 'motor encoder error',
    4: 'electrical shock (driver fault)',
    5: 'overload (persistent load beyond the motor torque)',
}


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data, crc=0):
    """Dynamixel CRC-16 (polynomial 0x8005, MSB first, initial value 0) of a bytes-like object."""
    for byte in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(body):
    """Insert FD after every FF FF FD in the instruction + parameter bytes."""
    out = bytearray()
    for byte in body:
        out.append(byte)
        if byte == 0xFD and out[-3:-1] == b'\xff\xff':
            out.append(0xFD)
    return bytes(out)


def unstuff(body):
    """Undo stuff(): drop the FD that follows every FF FF FD."""
    out = bytearray()
    i = 0
    while i < len(body):
        out.append(body[i])
        if body[i] == 0xFD and out[-3:-1] == b'\xff\xff' and body[i + 1:i + 2] == b'\xfd':
            i += 1
        i += 1
    return bytes(out)


def build_packet(servo_id, instruction, params=b''):
    """Bytes of one packet: header, ID, length, stuffed instruction + params, CRC."""
    body = stuff(bytes([instruction]) + bytes(params))
    head = HEADER + bytes([servo_id]) + struct.pack('<H', len(body) + 2)
    packet = head + body
    return packet + struct.pack('<H', crc16(packet))


def build_status(servo_id, error=0, params=b''):
    return build_packet(servo_id, STATUS, bytes([error]) + bytes(params))


class PacketError(ValueError):
    """A packet that cannot be parsed (bad CRC, bad length)."""


def split_packet(buffer):
    """Find the first whole packet in buffer.

    Returns (packet or None, bytes consumed). Bytes before a header are skipped, an incomplete
    packet consumes nothing, and a header with an impossible length is skipped. The packet's CRC
    is checked by parse_packet.
    """
    start = buffer.find(HEADER)
    if start < 0:
        return None, max(0, len(buffer) - 3)
    if len(buffer) < start + 7:
        return None, start
    length = struct.unpack_from('<H', buffer, start + 5)[0]
    end = start + 7 + length
    if length < 3:  # cannot hold an instruction and a CRC: not a real header
        return None, start + len(HEADER)
    if len(buffer) < end:
        return None, start
    return bytes(buffer[start:end]), end


def parse_packet(packet):
    """(servo_id, instruction, params) of one whole packet; PacketError if its CRC is wrong."""
    expected = struct.unpack_from('<H', packet, len(packet) - 2)[0]
    if crc16(packet[:-2]) != expected:
        raise PacketError(f'CRC mismatch (got {expected:#06x}, computed {crc16(packet[:-2]):#06x})')
    body = unstuff(packet[7:-2])
    return packet[4], body[0], body[1:]


def describe_status_error(error, hardware_status=None):
    """Words for a status packet's error byte (and the Hardware Error Status register if known)."""
    words = []
    if error & 0x7F:
        words.append(STATUS_ERRORS.get(error & 0x7F, f'unknown error number {error & 0x7F}'))
    if error & ALERT_BIT:
        words.append('hardware alert' + (f': {describe_hardware_error(hardware_status)}'
                                         if hardware_status is not None else ''))
    return '; '.join(words) or 'no error'


def describe_hardware_error(status):
    """Words for the bits set in the Hardware Error Status register."""
    names = [name for bit, name in HARDWARE_ERRORS.items() if status & (1 << bit)]
    return ', '.join(names) or 'no hardware error bit set'


def position_to_rad(raw):
    return (raw - POSITION_CENTER) * RAD_PER_POSITION


def rad_to_position(rad):
    return int(round(rad / RAD_PER_POSITION)) + POSITION_CENTER


def to_signed(value, size):
    """Two's-complement value of an unsigned register of `size` bytes."""
    bits = 8 * size
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def unpack_state(data):
    """(current, velocity, position) raw signed values from the 10 bytes at STATE_ADDRESS."""
    return struct.unpack('<hii', bytes(data))
