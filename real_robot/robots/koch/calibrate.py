"""Calibrate a Koch arm (LeRobot's procedure and file format for koch_follower / koch_leader).

    python -m real_robot.robots.koch.calibrate --arm koch_follower [--port /dev/ttyACM0] [--out FILE]
    python -m real_robot.robots.koch.calibrate --arm koch_leader --from_file my_leader.json   # a LeRobot file

With torque off and every servo in extended position mode, you put the arm in the middle of its range
and press Enter: each servo's Homing_Offset becomes 2047 - its position, so that the middle reads 2047.
Then you move every joint except shoulder_pan and wrist_roll through its whole range while the
positions are shown, and press Enter: the extremes become the joint's range (those two keep the whole
turn, 0..4095). A leader's elbow_flex is reversed (Drive_Mode 1), as LeRobot's koch_leader. The
offsets and ranges are written to the servos and saved as LeRobot's JSON. --from_file writes an
existing calibration file to the servos instead. The port and the file default to the arm's in
KOCH_ARMS (real_robot/robots/koch/settings.py).
"""
import sys

from real_robot import protocol as P
from real_robot.bots import RobotFault
from real_robot.lerobot_calibration import (MAX_STEP_VALUE, CalibrationError, load_calibration, record_ranges,
                                             calibrate_and_save, swept_ranges, write_calibration)
from real_robot.robots.koch import settings
from real_robot.robots.koch.arm import LAYOUT, STORED, open_koch_bus

HALF_TURN = MAX_STEP_VALUE // 2  # 2047: the position the middle of the range reads after homing


def drive_mode(role, joint):
    """1 (reversed) for the leader's INVERTED_LEADER_JOINTS, as LeRobot's koch_leader, else 0."""
    return int(role == 'leader' and joint in settings.INVERTED_LEADER_JOINTS)


def release(bus, role):
    """Torque off, extended position mode, the leader's reversed joints: the arm moves freely by hand."""
    for joint, servo_id in zip(settings.JOINTS, settings.SERVO_IDS):
        bus.write(servo_id, 'torque_enable', 0)
        bus.write(servo_id, 'operating_mode', P.OPERATING_MODES['extended_position'])
        bus.write(servo_id, 'drive_mode', drive_mode(role, joint))


def positions(bus):
    return dict(zip(settings.JOINTS, bus.sync_read_state(settings.SERVO_IDS)[:, 2].tolist()))


def set_half_turn_homings(bus):
    """Clear the offsets, then Homing_Offset = 2047 - position per servo -> {joint: offset}."""
    for servo_id in settings.SERVO_IDS:
        bus.write(servo_id, 'homing_offset', 0)
    offsets = {joint: HALF_TURN - position for joint, position in positions(bus).items()}
    for joint, servo_id in zip(settings.JOINTS, settings.SERVO_IDS):
        bus.write(servo_id, 'homing_offset', offsets[joint])
    return offsets


def calibrate(bus, role, ask=input, show=print):
    """The interactive procedure on an open bus -> the calibration (LeRobot's dict), written to the servos."""
    release(bus, role)
    ask('Move the arm to the middle of its range of motion, then press Enter...')
    offsets = set_half_turn_homings(bus)
    show(f"Move every joint except {' and '.join(settings.FULL_TURN_JOINTS)} through its whole range, one after "
         'the other; press Enter when done.')
    mins, maxes = swept_ranges(*record_ranges(lambda: positions(bus), lambda: ask(''), show),
                               settings.FULL_TURN_JOINTS)
    calibration = {joint: {'id': servo_id, 'drive_mode': drive_mode(role, joint), 'homing_offset': offsets[joint],
                           'range_min': mins[joint], 'range_max': maxes[joint]}
                   for joint, servo_id in zip(settings.JOINTS, settings.SERVO_IDS)}
    write_calibration(bus, calibration, STORED)
    return calibration


def main(args):
    arm = args['arm']
    defaults = settings.KOCH_ARMS.get(arm, {})
    role = args.get('role') or ('leader' if 'leader' in arm else 'follower')
    port, out = args.get('port') or defaults.get('port'), args.get('out') or defaults.get('calibration')
    if port is None or out is None:
        raise ValueError(f"--arm {arm}: not in KOCH_ARMS (real_robot/robots/koch/settings.py); give --port and --out")
    print(f'Calibrating the Koch {role} {arm} on {port}; calibration file {out}')
    bus = open_koch_bus(arm, port, role)
    return calibrate_and_save(bus, out, lambda: from_file(bus, role, args['from_file']) if args.get('from_file')
                              else calibrate(bus, role))


def from_file(bus, role, path):
    """The calibration file at `path` (LeRobot's), written to the servos -> the calibration."""
    calibration = load_calibration(path, LAYOUT)
    release(bus, role)
    write_calibration(bus, calibration, STORED)
    return calibration


if __name__ == '__main__':
    import argparse
    parser = argparse.ArgumentParser(prog='python -m real_robot.robots.koch.calibrate', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--arm', required=True, help='an arm of KOCH_ARMS (koch_follower, koch_leader, ...)')
    parser.add_argument('--role', choices=('follower', 'leader'),
                        help="the arm's role (default: 'leader' when its name says so, else 'follower')")
    parser.add_argument('--port', help="serial device of the arm (default: the arm's port in KOCH_ARMS)")
    parser.add_argument('--out', help="calibration file to write (default: the arm's file in KOCH_ARMS)")
    parser.add_argument('--from_file', help='write this calibration file (LeRobot format) to the servos instead')
    try:
        main(vars(parser.parse_args()))
    except (RobotFault, CalibrationError, ValueError) as err:
        sys.exit(f'calibrate: {err}')
