"""Calibrate an SO-100 / SO-101 arm (LeRobot's procedure and file format).

    python -m real_robot.calibrate --robot so101 --role follower [--port /dev/ttyACM0] [--out FILE]
    python -m real_robot.calibrate --role leader --from_file my_leader.json   # a LeRobot file, as it is

With torque off, you put the arm in the middle of its range and press Enter: each servo's
Homing_Offset becomes its position - 2047, so that the middle reads 2047. Then you move every joint
except wrist_roll through its whole range while the positions are shown, and press Enter: the
extremes become the joint's range (wrist_roll keeps the whole turn, 0..4095). The offsets and
ranges are written to the servos (the ranges into their position-limit registers) and saved as
LeRobot's JSON. --from_file writes an existing calibration file to the servos instead.
The port and the file default to those of the arm `so_<role>` in SO_ARMS (real_robot/settings.py).
"""
import sys

from real_robot import feetech_protocol as F
from real_robot import settings
from real_robot.bots import RobotFault
from real_robot.feetech import SOArm, load_calibration, open_so_bus
from real_robot.lerobot_calibration import (CalibrationError, calibrate_and_save, record_ranges, swept_ranges,
                                             write_calibration)

HALF_TURN = (F.RESOLUTION - 1) // 2  # 2047: the position the middle of the range reads after homing


def release(bus):
    """Torque off and EEPROM unlocked on every servo, in position mode: the arm moves freely by hand."""
    for servo_id in settings.SO_SERVO_IDS:
        bus.write(servo_id, 'torque_enable', 0)
        bus.write(servo_id, 'lock', 0)
        bus.write(servo_id, 'operating_mode', F.OPERATING_MODES['position'])


def positions(bus):
    return dict(zip(settings.SO_JOINTS, bus.sync_read_state(settings.SO_SERVO_IDS)[:, 0].tolist()))


def set_half_turn_homings(bus):
    """Clear offsets and limits, then Homing_Offset = position - 2047 per servo -> {joint: offset}."""
    for servo_id in settings.SO_SERVO_IDS:
        bus.write(servo_id, 'homing_offset', 0)
        bus.write(servo_id, 'min_position_limit', 0)
        bus.write(servo_id, 'max_position_limit', F.RESOLUTION - 1)
    offsets = {joint: position - HALF_TURN for joint, position in positions(bus).items()}
    for joint, servo_id in zip(settings.SO_JOINTS, settings.SO_SERVO_IDS):
        bus.write(servo_id, 'homing_offset', offsets[joint])
    return offsets


def calibrate(bus, ask=input, show=print):
    """The interactive procedure on an open bus -> the calibration (LeRobot's dict), written to the servos."""
    release(bus)
    ask('Move the arm to the middle of its range of motion, then press Enter...')
    offsets = set_half_turn_homings(bus)
    show(f"Move every joint except {settings.SO_FULL_TURN_JOINT} through its whole range, one after the other; "
         'press Enter when done.')
    mins, maxes = swept_ranges(*record_ranges(lambda: positions(bus), lambda: ask(''), show),
                               (settings.SO_FULL_TURN_JOINT,))
    calibration = {joint: {'id': servo_id, 'drive_mode': 0, 'homing_offset': offsets[joint],
                           'range_min': mins[joint], 'range_max': maxes[joint]}
                   for joint, servo_id in zip(settings.SO_JOINTS, settings.SO_SERVO_IDS)}
    write_calibration(bus, calibration, SOArm.stored)
    return calibration


def main(args):
    arm = args.get('arm') or f"so_{args['role']}"
    defaults = settings.SO_ARMS.get(arm, {})
    port, out = args.get('port') or defaults.get('port'), args.get('out') or defaults.get('calibration')
    if port is None or out is None:
        raise ValueError(f"--arm {arm}: not in SO_ARMS (real_robot/settings.py); give --port and --out")
    print(f"Calibrating the {args['robot'].upper()} {args['role']} on {port}; calibration file {out}")
    bus = open_so_bus(arm, port)
    return calibrate_and_save(bus, out, lambda: from_file(bus, args['from_file']) if args.get('from_file')
                              else calibrate(bus))


def from_file(bus, path):
    """The calibration file at `path` (LeRobot's), written to the servos -> the calibration."""
    calibration = load_calibration(path)
    release(bus)
    write_calibration(bus, calibration, SOArm.stored)
    return calibration


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(prog='python -m real_robot.calibrate', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--robot', choices=('so100', 'so101'), default='so101', help='the arm (same servos)')
    parser.add_argument('--role', choices=('follower', 'leader'), required=True, help='the arm to calibrate')
    parser.add_argument('--arm', help='an arm of SO_ARMS in real_robot/settings.py (default: so_<role>)')
    parser.add_argument('--port', help="serial device of the arm (default: the arm's port in SO_ARMS)")
    parser.add_argument('--out', help="calibration file to write (default: the arm's file in SO_ARMS)")
    parser.add_argument('--from_file', help='write this calibration file (LeRobot format) to the servos instead')
    try:
        main(vars(parser.parse_args()))
    except (RobotFault, CalibrationError, ValueError) as err:
        sys.exit(f'{parser.prog}: error: {err}')
