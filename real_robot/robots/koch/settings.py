"""Every setting of the Koch arms (v1.0 / v1.1), one per line: LeRobot's koch_follower and koch_leader,
six Dynamixel X-series servos each, their calibration in LeRobot's files and units."""
import os

from constants import SO_JOINT_NAMES
from real_robot.settings import CALIBRATION_DIR

# arm name -> serial device and calibration file (LeRobot's JSON, as `lerobot-calibrate` writes it)
KOCH_ARMS = {
    'koch_follower': {'port': '/dev/ttyACM0', 'calibration': os.path.join(CALIBRATION_DIR, 'koch_follower.json')},
    'koch_leader': {'port': '/dev/ttyACM1', 'calibration': os.path.join(CALIBRATION_DIR, 'koch_leader.json')},
}
JOINTS = SO_JOINT_NAMES  # LeRobot names a Koch arm's joints as an SO arm's: shoulder_pan ... gripper
SERVO_IDS = (1, 2, 3, 4, 5, 6)  # in JOINTS order
MODELS = {  # role -> the servo model of each joint (protocol.MODEL_NUMBERS), in JOINTS order
    'follower': ('xl430-w250', 'xl430-w250', 'xl330-m288', 'xl330-m288', 'xl330-m288', 'xl330-m288'),
    'leader': ('xl330-m077',) * 6,
}
BAUDRATE = 1_000_000  # as LeRobot sets the arms up
FULL_TURN_JOINTS = ('shoulder_pan', 'wrist_roll')  # calibrated over the whole turn (0..4095)
INVERTED_LEADER_JOINTS = ('elbow_flex',)  # the leader's Drive_Mode is reversed on these (LeRobot's koch_leader)
# Units of positions and actions: LeRobot's Koch default (use_degrees False), -100..100 over each body
# joint's range ('degrees': about mid-range), the gripper 0..100
BODY_UNITS = 'range_m100_100'
RETURN_DELAY = 0  # 2 us per unit; the factory's 250 (500 us) slows every read
ELBOW_PID = (1500, 0, 600)  # the follower's elbow_flex position P, I, D gains (LeRobot's)
LEADER_GRIPPER_OPEN = 50.0  # units: the leader's gripper is held here under current control, a trigger to squeeze
MAX_STEP = 100  # largest change of a follower joint target per control step, in raw steps (8.8 degrees)
RANGE_MARGIN = 50  # a follower joint this far outside its calibrated range at connection: nothing moves
SAFE_POSE = None  # follower pose (BODY_UNITS, 6 values) reached before torque is released; None: in place
OPENING_MOVE_TIME_S = 2.0  # record_episodes: the follower moves to the leader's pose before recording starts
DRIVERS = ('auto', 'dynamixel')  # --robot_driver values: the arms' own Dynamixel driver
