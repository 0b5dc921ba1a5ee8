"""Every hardware setting and safety limit of the real-robot backend, one per line.

Edit this file to match your station. Device names follow the ALOHA udev rules (fixed symlinks
per serial number); gripper calibration constants live in the top-level constants.py.
"""
import math
import os

from constants import IMAGE_HW, REPO_DIR, SO_JOINT_NAMES, START_ARM_POSE

### Servo buses (Dynamixel Protocol 2.0, one USB-serial adapter per arm)
SERVO_PORTS = {  # bot name -> serial device
    'puppet_left': '/dev/ttyDXL_puppet_left',
    'puppet_right': '/dev/ttyDXL_puppet_right',
    'master_left': '/dev/ttyDXL_master_left',
    'master_right': '/dev/ttyDXL_master_right',
}
BAUDRATE = 1_000_000  # Interbotix arms ship configured for 1 Mbps
# Primary servo IDs of one arm in joint order; the shoulder and elbow shadow servos (IDs 3 and 5)
# follow their primaries through the Secondary ID register set by the Interbotix set-up.
ARM_SERVO_IDS = (1, 2, 4, 6, 7, 8)  # waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate
GRIPPER_SERVO_ID = 9
SERVO_IO_RETRIES = 3  # attempts per register write before giving up
SERVO_REPLY_TIMEOUT_MS = 34.0  # wait for a status packet beyond its transfer time (the SDK's default)

### Gripper linkage (horn radius and arm length in metres, from the Interbotix robot descriptions):
# finger position = r cos(pi/2 - q) + sqrt(l^2 - (r sin(pi/2 - q))^2) for gripper joint angle q
GRIPPER_LINKAGE = {
    'vx300s': (0.022, 0.036),  # ViperX 300 S follower ("puppet")
    'wx250s': (0.014, 0.024),  # WidowX 250 S leader ("master")
}
PUPPET_MODEL = 'vx300s'
MASTER_MODEL = 'wx250s'

### Operating modes at set-up (as aloha_scripts' setup_puppet_bot / opening ceremony)
PUPPET_ARM_MODE = 'position'
PUPPET_GRIPPER_MODE = 'current_based_position'
PUPPET_GRIPPER_CURRENT_LIMIT = None  # raw units of 2.69 mA written at set-up; None keeps the servo's value

### Cameras (OpenCV / V4L2 devices; frames are handed out as RGB uint8)
CAMERA_DEVICES = {
    'cam_high': '/dev/CAM_HIGH',
    'cam_low': '/dev/CAM_LOW',
    'cam_left_wrist': '/dev/CAM_LEFT_WRIST',
    'cam_right_wrist': '/dev/CAM_RIGHT_WRIST',
    'front': '/dev/video0',  # SO-arm tasks
    'wrist': '/dev/video2',
}
ALOHA_DRIVERS = ('auto', 'interbotix', 'dynamixel', 'sim')  # how ALOHA's arms are reached ('auto': the first)
SO_DRIVERS = ('auto', 'feetech', 'sim')  # how SO-100 / SO-101 arms are reached (sim: real_robot/so_sim.py)
ROBOT_DRIVERS = ALOHA_DRIVERS + ('feetech',)  # --robot_driver
ROBOT_BACKENDS = ('builtin', 'aloha_scripts')  # --robot_backend: our drivers or the aloha_scripts/ROS stack
CAMERA_HW = IMAGE_HW  # (height, width) requested from each camera
CAMERA_FPS = 30
CAMERA_FOURCC = 'MJPG'  # four USB cameras on one hub need compressed streams
CAMERA_OPEN_TIMEOUT_S = 5.0  # first frame must arrive within this after opening
# ROS image topics used with the Interbotix driver (cameras published by usb_cam)
ROS_CAMERA_TOPIC = '/usb_{cam_name}/image_raw'

### Safety limits
# Position limits of the ViperX 300 S servos (register units, Interbotix robot description) in
# joint order; joint angle = (register - 2048) * 2pi / 4096
PUPPET_POSITION_LIMITS_RAW = (
    (0, 4095),  # waist
    (841, 2867),  # shoulder
    (898, 3094),  # elbow
    (0, 4095),  # forearm_roll
    (830, 3504),  # wrist_angle
    (0, 4095),  # wrist_rotate
)
PUPPET_JOINT_LIMITS = tuple(tuple((r - 2048) * 2 * math.pi / 4096 for r in pair)
                            for pair in PUPPET_POSITION_LIMITS_RAW)  # rad
MAX_JOINT_STEP = 0.1  # rad: largest change of an arm joint target per control step (5 rad/s at 50 Hz)
# Normalised gripper command range (0 closed .. 1 open). Teleoperators squeeze past "closed" to
# grip harder; current-based position mode limits the force, so a little below 0 is allowed.
GRIPPER_COMMAND_RANGE = (-0.25, 1.05)
POLICY_STALL_S = 0.5  # no env.step for this long: the watchdog re-commands the present position
WATCHDOG_PERIOD_S = 0.05  # how often the watchdog thread looks
SERVO_TIMEOUT_S = 0.25  # servo reads keep failing this long (no new goals meanwhile): safety stop
CAMERA_STALE_S = 0.2  # a frame older than this is not used: the step waits, holding position
CAMERA_TIMEOUT_S = 1.0  # no fresh frame for this long: safety stop
SAFE_ARM_POSE = (0, -1.85, 1.55, 0, 0.8, 0)  # Interbotix sleep pose: arms rest on their cradles
SAFE_MOVE_TIME_S = 2.0  # seconds to reach the safe pose before torque is released

### Motions of reset and teleoperation (aloha_scripts values)
START_ARM_QPOS = tuple(START_ARM_POSE[:6])
RESET_ARM_MOVE_TIME_S = 1.0
OPENING_MOVE_TIME_S = 1.5  # record_episodes: all four arms to the start pose
TELEOP_START_THRESHOLD = 0.0  # master gripper joint (rad) below which a handle counts as closed

### Simulated robot (driver 'sim'): MuJoCo joint-space env behind the same driver interface
SIM_TASK_NAME = 'sim_transfer_cube_scripted'
SIM_CAMERAS = {  # real camera name -> MuJoCo camera name
    'cam_high': 'top',
    'cam_low': 'angle',
    'cam_left_wrist': 'left_wrist',
    'cam_right_wrist': 'right_wrist',
}

### SO-100 / SO-101 arms (six Feetech STS3215 servos per arm, one USB-serial adapter per arm)
CALIBRATION_DIR = os.environ.get('ACT_CALIBRATION_DIR', os.path.join(REPO_DIR, 'calibration'))
SO_ARMS = {  # arm name -> serial device and calibration file (LeRobot's JSON format)
    name: {'port': port, 'calibration': os.path.join(CALIBRATION_DIR, f'{name}.json')}
    for name, port in (('so_follower', '/dev/ttyACM0'), ('so_leader', '/dev/ttyACM1'),
                       ('so_follower_left', '/dev/ttyACM0'), ('so_leader_left', '/dev/ttyACM1'),
                       ('so_follower_right', '/dev/ttyACM2'), ('so_leader_right', '/dev/ttyACM3'))
}
SO_BAUDRATE = 1_000_000  # STS3215 factory setting
SO_JOINTS = SO_JOINT_NAMES
SO_SERVO_IDS = (1, 2, 3, 4, 5, 6)  # in SO_JOINTS order
SO_FULL_TURN_JOINT = 'wrist_roll'  # calibrated over the whole turn (0..4095) instead of a recorded range
# Units of positions and actions, LeRobot's: body joints in degrees about mid-range ('degrees', LeRobot's
# default) or -100..100 over the calibrated range ('range_m100_100', older LeRobot datasets); gripper 0..100
SO_BODY_UNITS = 'degrees'
# Servo set-up at connection (LeRobot's values)
SO_RETURN_DELAY = 0  # 2 us per unit; the factory's 250 (500 us) slows every read
SO_ACCELERATION = 254
SO_POSITION_PID = (16, 0, 32)  # P, I, D coefficients of position mode (followers)
SO_GRIPPER_MAX_TORQUE = 500  # 0.1 % units: half of the stall torque, so a blocked gripper does not burn out
SO_GRIPPER_PROTECTION_CURRENT = 250  # 6.5 mA units
SO_GRIPPER_OVERLOAD_TORQUE = 25  # % of torque kept after an overload
# Safety limits (encoder steps: 4096 per turn, whatever SO_BODY_UNITS)
SO_MAX_STEP = 100  # largest change of a joint target per control step (8.8 degrees: 264 deg/s at 30 Hz)
SO_RANGE_MARGIN = 50  # a follower joint this far outside its calibrated range at connection: nothing moves
SO_SAFE_POSE = None  # follower pose (SO_BODY_UNITS, 6 values) reached before torque is released; None: in place
SO_OPENING_MOVE_TIME_S = 2.0  # record_episodes: followers move to the leaders' pose before recording starts
