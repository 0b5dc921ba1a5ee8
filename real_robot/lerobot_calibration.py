"""LeRobot's calibration files and units, for the arms calibrated as LeRobot calibrates them (SO-100 /
SO-101 on Feetech servos, Koch on Dynamixel servos), whatever their bus.

Units (each arm's body_units setting):
    degrees         (raw - mid) * 360 / 4095, mid the middle of the calibrated range (not clamped)
    range_m100_100  -100 .. 100 over the calibrated range (clamped)
    gripper         0 .. 100 over the calibrated range (clamped), in both cases
Calibration (LeRobot's JSON): per joint {"id", "drive_mode", "homing_offset", "range_min", "range_max"},
the range in Present_Position steps of a 4096-step turn.
"""
import json
import os
import threading
from dataclasses import dataclass

import numpy as np

from common.files import atomic_write
from common.safe_load import load_json

CALIBRATION_KEYS = ('id', 'drive_mode', 'homing_offset', 'range_min', 'range_max')
MAX_STEP_VALUE = 4095  # the last step of a 4096-step turn: LeRobot's "max_res" in the unit conversions
BODY_UNITS = ('degrees', 'range_m100_100')
SWEEP_PERIOD_S = 0.02  # how often positions are read while the joints are swept


class CalibrationError(ValueError):
    """A calibration file that cannot be used for this arm (the message names the file and key)."""


@dataclass(frozen=True)
class ArmLayout:
    """What a calibration file of one kind of arm must hold, and how its messages name things."""
    what: str  # 'SO arm', 'Koch arm'
    joints: tuple  # joint names in servo order, as LeRobot names them
    servo_ids: tuple  # in joints' order
    ids_setting: str  # where the IDs are declared, for messages
    offset_limit: int  # |homing_offset| must stay below this (the register's range)
    how_to_calibrate: str  # what a missing file's message advises


def load_calibration(path, layout):
    """LeRobot's calibration JSON of an arm, checked against its layout: {joint: {id, drive_mode,
    homing_offset, range_min, range_max}} in the layout's joint order."""
    if not os.path.isfile(path):
        raise CalibrationError(f'{path}: no calibration file; {layout.how_to_calibrate}')
    try:
        calibration = load_json(path, CalibrationError)
    except CalibrationError as err:
        detail = str(err).removeprefix(f'{path}: ')
        raise CalibrationError(f'{path}: not a calibration file (JSON expected): {detail}') from None
    expected = dict(zip(layout.joints, layout.servo_ids))
    if not isinstance(calibration, dict) or set(calibration) != set(expected):
        found = sorted(calibration) if isinstance(calibration, dict) else type(calibration).__name__
        raise CalibrationError(f'{path}: a calibration of another arm: joints {found}, expected the '
                               f'{layout.what}\'s {list(expected)}')
    for joint, servo_id in expected.items():
        _check_joint(path, layout, joint, servo_id, calibration[joint])
    return {joint: dict(calibration[joint]) for joint in layout.joints}


def _check_joint(path, layout, joint, servo_id, entry):
    if not isinstance(entry, dict) or any(not isinstance(entry.get(key), int) for key in CALIBRATION_KEYS):
        raise CalibrationError(f'{path}: {joint}: expected integer {", ".join(CALIBRATION_KEYS)}, found {entry}')
    if entry['id'] != servo_id:
        raise CalibrationError(f'{path}: {joint} has servo ID {entry["id"]}, expected {servo_id} '
                               f'({layout.ids_setting}): a calibration of another arm?')
    if not 0 <= entry['range_min'] < entry['range_max'] <= MAX_STEP_VALUE:
        raise CalibrationError(f'{path}: {joint}: range {entry["range_min"]}..{entry["range_max"]} is empty or '
                               f'outside 0..{MAX_STEP_VALUE}: calibrate again, moving every joint through its range')
    if abs(entry['homing_offset']) >= layout.offset_limit:
        raise CalibrationError(f'{path}: {joint}: homing_offset {entry["homing_offset"]} is outside '
                               f'+-{layout.offset_limit - 1}')


def save_calibration(path, calibration):
    """Write the calibration as LeRobot does (indented JSON), atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: json.dump(calibration, f, indent=4), mode='w')


def record_ranges(read_positions, wait_for_enter, show=print):
    """LeRobot's sweep: the extremes of every joint's position ({joint: raw} from read_positions()), read
    until wait_for_enter() returns -> (mins, maxes)."""
    done = threading.Event()
    waiter = threading.Thread(target=lambda: (wait_for_enter(), done.set()), daemon=True)
    mins = maxes = read_positions()
    waiter.start()
    while not done.wait(SWEEP_PERIOD_S):
        now = read_positions()
        mins = {joint: min(mins[joint], value) for joint, value in now.items()}
        maxes = {joint: max(maxes[joint], value) for joint, value in now.items()}
        show(' | '.join(f'{joint} {mins[joint]}..{maxes[joint]}' for joint in mins), end='\r')
    show()
    return mins, maxes


def swept_ranges(mins, maxes, full_turn_joints):
    """The ranges of a sweep, the full-turn joints over the whole turn -> (mins, maxes); a CalibrationError
    naming the other joints that did not move."""
    still = [joint for joint in mins if joint not in full_turn_joints and maxes[joint] - mins[joint] <= 0]
    if still:
        raise CalibrationError(f'{", ".join(still)} did not move (a range of zero width): nothing was saved; '
                               'run the calibration again and move every joint through its range')
    full = {joint: (0, MAX_STEP_VALUE) for joint in full_turn_joints}
    return ({joint: full.get(joint, (low, 0))[0] for joint, low in mins.items()},
            {joint: full.get(joint, (0, high))[1] for joint, high in maxes.items()})


def calibrate_and_save(bus, out, work):
    """calibration = work() on the open `bus` (written to its servos; the bus is closed whatever happens),
    then saved to `out` as LeRobot's JSON -> the calibration."""
    try:
        calibration = work()
    finally:
        bus.close()
    save_calibration(out, calibration)
    print(f'Calibration written to the servos and saved to {out}')
    return calibration


def write_calibration(bus, calibration, stored):
    """Write each joint's calibration into the registers that hold it (stored: (key, register) pairs)."""
    for entry in calibration.values():
        for key, register in stored:
            bus.write(entry['id'], register, entry[key])


class Units:
    """Conversion raw steps <-> calibrated units for the joints of one arm (LeRobot's formulas), in the
    calibration's joint order; the joint named 'gripper' is 0 .. 100. apply_drive_mode: a joint whose
    drive_mode is 1 is mirrored here (Feetech servos); False where the servo mirrors itself (Dynamixel's
    Drive_Mode register), as LeRobot's buses do."""

    def __init__(self, calibration, body_units='degrees', apply_drive_mode=True):
        if body_units not in BODY_UNITS:
            raise ValueError(f"body units '{body_units}' are not {' or '.join(BODY_UNITS)}")
        self.body_units = body_units
        entries = list(calibration.values())
        self.low = np.array([e['range_min'] for e in entries], dtype=float)  # (joints,)
        self.high = np.array([e['range_max'] for e in entries], dtype=float)
        self.flip = np.array([bool(e['drive_mode']) and apply_drive_mode for e in entries])
        self.gripper = np.array([joint == 'gripper' for joint in calibration])
        self.degrees = ~self.gripper & (body_units == 'degrees')

    def to_units(self, raw):
        """(..., joints) raw Present_Position steps -> calibrated units."""
        raw = np.asarray(raw, dtype=float)
        bounded = np.clip(raw, self.low, self.high)
        fraction = (bounded - self.low) / (self.high - self.low)
        ranged = np.where(self.gripper, np.where(self.flip, 100 - 100 * fraction, 100 * fraction),
                          np.where(self.flip, 100 - 200 * fraction, 200 * fraction - 100))
        return np.where(self.degrees, (raw - (self.low + self.high) / 2) * 360 / MAX_STEP_VALUE, ranged)

    def to_raw(self, units):
        """(..., joints) calibrated units -> raw goal steps (ints, truncated as LeRobot does)."""
        units = np.asarray(units, dtype=float)
        body = np.clip(np.where(self.flip, -units, units), -100, 100)
        gripper = np.clip(np.where(self.flip, 100 - units, units), 0, 100)
        ranged = np.where(self.gripper, gripper / 100, (body + 100) / 200) * (self.high - self.low) + self.low
        raw = np.where(self.degrees, units * MAX_STEP_VALUE / 360 + (self.low + self.high) / 2, ranged)
        return np.trunc(raw).astype(np.int64)

    def per_step(self):
        """(joints,) units per raw step (signed): velocities and steps in calibrated units."""
        span = np.where(self.gripper, 100.0, 200.0) / (self.high - self.low)
        scale = np.where(self.degrees, 360 / MAX_STEP_VALUE, span)
        return np.where(self.flip & ~self.degrees, -scale, scale)
