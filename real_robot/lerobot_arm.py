"""The arm of a LeRobot-calibrated robot on its own servo bus (SO-100 / SO-101 on Feetech servos,
real_robot/feetech.py; Koch on Dynamixel servos, real_robot/robots/koch/arm.py): its calibration file
checked against what the servos hold, positions in LeRobot's units, goals clamped to the calibrated
range, torque switched off even on a failing bus. A subclass gives its bus, how the servos hold the
calibration and how its torque is switched.
"""
import numpy as np

from real_robot.bots import Bot, JointState, RobotFault
from real_robot.lerobot_calibration import CalibrationError


class LeRobotArm(Bot):
    """read() -> JointState of (joints,) positions (units), velocities (units/s) and currents (mA);
    command_arm(positions (joints,)) sends goals for every joint. A subclass sets `ids`, `units` and
    `calibration`, connects its bus (connect) and sets the class attributes below."""
    stored = ()  # (calibration key, register) pairs the servos hold
    range_margin = 50  # raw steps outside the calibrated range still accepted at power-on
    steps_per_velocity_unit = 1.0  # Present_Velocity -> raw steps a second
    ma_per_current_unit = 1.0  # Present_Current -> mA

    def write_hint(self):
        """How to write this arm's calibration file to its servos (for the message of a mismatch)."""
        raise NotImplementedError

    def settings_hint(self):
        """Where this arm's calibration file is named (for the message of a mismatch)."""
        raise NotImplementedError

    def connect(self, bus):
        """Take the opened bus, checking that its servos hold the file's calibration (the bus is closed
        when they do not)."""
        self.bus = bus
        try:
            self.check_calibration()
        except BaseException:
            bus.close()
            raise

    def check_calibration(self):
        """RobotFault naming the differences when the file's calibration is not the one the servos hold."""
        differ = []
        for joint, servo_id in zip(self.calibration, self.ids):
            for key, register in self.stored:
                value = self.bus.read(servo_id, register)
                if self.calibration[joint][key] != value:
                    differ.append(f'{joint} {key} {self.calibration[joint][key]} in the file, {value} in the servo')
        if differ:
            listed = '; '.join(differ[:3]) + ('; ...' if len(differ) > 3 else '')
            raise RobotFault(f"arm '{self.name}' ({self.bus.port}): the calibration in {self.calibration_path} is not "
                             f'the one stored in the servos ({listed}). If the file belongs to this arm, write it to '
                             f'the servos with `{self.write_hint()}`; otherwise name this arm\'s file in '
                             f'{self.settings_hint()} or calibrate')

    def read_raw(self):
        """(joints, 4) raw present position, velocity, load and current."""
        raise NotImplementedError

    def read(self):
        raw = self.read_raw()
        velocity = raw[:, 1] * self.steps_per_velocity_unit * self.units.per_step()
        state = JointState(self.units.to_units(raw[:, 0]), velocity, raw[:, 3] * self.ma_per_current_unit)
        self.last_state = state
        return state

    def check_in_range(self, raw_positions):
        """RobotFault naming the joint when a position is further than range_margin outside its range."""
        for joint, position, low, high in zip(self.calibration, raw_positions, self.units.low, self.units.high):
            if not low - self.range_margin <= position <= high + self.range_margin:
                raise RobotFault(f"arm '{self.name}': {joint} is at {int(position)} steps, outside its calibrated "
                                 f'range {int(low)}..{int(high)} ({self.calibration_path}); nothing was moved. Move '
                                 f'it into its range by hand, or calibrate again if the file is not this arm\'s')

    def command_raw(self, raw):
        """Goal positions (joints,) in raw steps, clamped to the calibrated range."""
        raw = np.clip(np.round(raw), self.units.low, self.units.high).astype(int)
        self.bus.sync_write('goal_position', dict(zip(self.ids, raw.tolist())))

    def command_arm(self, qpos):
        self.command_raw(self.units.to_raw(qpos))

    def switch_torque(self, servo_id, enable):
        """One servo's torque (and what goes with it on this bus), each write checked."""
        self.bus.write(servo_id, 'torque_enable', int(bool(enable)))

    def torque(self, enable, part='all'):
        """Torque off goes out first as one sync write, so that it reaches every servo even on a failing
        bus; then every servo confirms (switch_torque)."""
        if not enable:
            self.bus.sync_write('torque_enable', {servo_id: 0 for servo_id in self.ids})
        failures = []
        for servo_id in self.ids:
            try:
                self.switch_torque(servo_id, enable)
            except RobotFault as e:
                failures.append(e)
        if failures:
            raise type(failures[0])('; '.join(str(e) for e in failures))

    def close(self):
        self.bus.close()


def open_listed_arm(arm_class, arms, table, name, role, clock=None):
    """The arm `name` of the table `arms` ({name: {'port', 'calibration'}}, called `table` in messages)."""
    if name not in arms:
        raise KeyError(f"unknown arm '{name}': known arms are {', '.join(sorted(arms))} ({table})")
    try:
        return arm_class(name, arms[name]['port'], arms[name]['calibration'], role=role, clock=clock)
    except CalibrationError as e:  # a file to fix, not a fault of the hardware: one line, no torque was on
        raise CalibrationError(f"arm '{name}': {e}") from None
