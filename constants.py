"""Task configurations and fixed robot constants.

Users add a task by adding an entry to SIM_TASK_CONFIGS (its name beginning with `sim_`) or to
REAL_TASK_CONFIGS (real robots; real_robot.TASK_CONFIGS is the same table, aloha_scripts' name for
it). Dataset directories default to `<repo>/data/<task_name>`; set the environment variable
ACT_DATA_DIR to keep data elsewhere, or pass --dataset_dir to the scripts for a one-off run. Looking a
task up by name (short names too), its rate and its LeRobot names are tasks.py's.
"""
import os
import pathlib

PROJECT_VERSION = '1.0.0'  # written into each checkpoint folder's config.json
REPO_DIR = pathlib.Path(__file__).parent.resolve()
DATA_DIR = os.environ.get('ACT_DATA_DIR', str(REPO_DIR / 'data'))  # root of all task datasets


ALOHA_ROBOT_TYPE = 'aloha'  # LeRobot's robot_type of two-arm ALOHA episodes


# LeRobot's robot_type of SO-100 / SO-101 episodes, one arm or two, as its recorder writes it (robot.name)
SO_ROBOT_TYPE, BI_SO_ROBOT_TYPE = 'so_follower', 'bi_so_follower'


def _sim_task(name, episode_len, reward_stages, instruction, camera_names=('top',), num_episodes=50,
              robot_type=ALOHA_ROBOT_TYPE, simulation='aloha', **rate):
    return {
        'dataset_dir': os.path.join(DATA_DIR, name),
        'num_episodes': num_episodes,
        'episode_len': episode_len,  # control steps per episode
        'camera_names': list(camera_names),
        'reward_stages': reward_stages,  # what reaching reward 1, 2, ... means (sim_env.py's rewards)
        'instruction': instruction,  # a LeRobot dataset's task text
        'robot_type': robot_type,
        'simulation': simulation,  # the simulation it runs in (simulation/: 'aloha', 'so101', ...)
        **rate,  # 'fps': control steps a second, when not CONTROL_HZ; 'so_arms': simulated SO arms
    }


TRANSFER_STAGES = ('the right gripper touches the cube', 'it lifts the cube', 'the left gripper touches it too',
                   'the left gripper holds it alone (success)')
INSERTION_STAGES = ('the left gripper touches the socket and the right the peg', 'both are lifted',
                    'the peg touches the socket in the air', 'the peg touches the pin (success)')

PICK_PLACE_STAGES = ('the gripper touches the cube', 'both jaws hold it off the table',
                     'it is held over the target area', 'it rests in the target area, released (success)')

### Task parameters (episode lengths and cameras as in the original)
TRANSFER = 'Transfer the cube from the right gripper to the left'
INSERTION = 'Insert the peg into the socket in the air'
PICK_PLACE = 'Pick up the red cube and put it on the green target'
SIM_TASK_CONFIGS = {
    'sim_transfer_cube_scripted': _sim_task('sim_transfer_cube_scripted', 400, TRANSFER_STAGES, TRANSFER),
    'sim_transfer_cube_human': _sim_task('sim_transfer_cube_human', 400, TRANSFER_STAGES, TRANSFER),
    'sim_insertion_scripted': _sim_task('sim_insertion_scripted', 400, INSERTION_STAGES, INSERTION),
    'sim_insertion_human': _sim_task('sim_insertion_human', 500, INSERTION_STAGES, INSERTION),
    # one SO-101 arm (so101_sim/): 10 s at the SO tasks' 30 Hz, the real so101_pick_place task's cameras
    'sim_so101_pick_place': _sim_task('sim_so101_pick_place', 300, PICK_PLACE_STAGES, PICK_PLACE,
                                      camera_names=('front', 'wrist'), robot_type=SO_ROBOT_TYPE, simulation='so101',
                                      so_arms=1, fps=30),
}


### Real-robot tasks (aloha_scripts' TASK_CONFIGS)
# ALOHA tasks: episode_len in control steps of DT (50 Hz). SO-100 / SO-101 tasks name their robot
# ('robot': 'so', a folder of real_robot/robots/; ALOHA's when a task names none), their arms
# (SO_ARMS in real_robot/settings.py: followers and leaders, left arm first), their cameras
# (CAMERA_DEVICES) and their rate; episode_len is in steps of 1 / fps; state and action have 6
# values per arm (real_robot/so_env.py).
ALOHA_CAMERA_NAMES = ['cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist']

REAL_TASK_CONFIGS = {
    'aloha_wear_shoe': {
        'dataset_dir': os.path.join(DATA_DIR, 'aloha_wear_shoe'),
        'num_episodes': 50,
        'episode_len': 1000,
        'camera_names': list(ALOHA_CAMERA_NAMES),
    },
    'so101_pick_place': {  # one SO-101 arm: state and action 6
        'dataset_dir': os.path.join(DATA_DIR, 'so101_pick_place'),
        'num_episodes': 50,
        'episode_len': 600,  # 20 s at 30 Hz
        'camera_names': ['front', 'wrist'],
        'robot': 'so',  # real_robot/robots/so/
        'followers': ['so_follower'],
        'leaders': ['so_leader'],
        'fps': 30,
        'robot_type': SO_ROBOT_TYPE,
    },
    'so101_bimanual': {  # two SO-101 arms: state and action 12
        'dataset_dir': os.path.join(DATA_DIR, 'so101_bimanual'),
        'num_episodes': 50,
        'episode_len': 900,  # 30 s at 30 Hz
        'camera_names': ['front'],
        'robot': 'so',
        'followers': ['so_follower_left', 'so_follower_right'],
        'leaders': ['so_leader_left', 'so_leader_right'],
        'fps': 30,
        'robot_type': BI_SO_ROBOT_TYPE,
    },
    'koch_pick_place': {  # one Koch arm (real_robot/robots/koch/): state and action 6
        'dataset_dir': os.path.join(DATA_DIR, 'koch_pick_place'),
        'num_episodes': 50,
        'episode_len': 600,  # 20 s at 30 Hz
        'camera_names': ['front', 'wrist'],
        'robot': 'koch',
        'followers': ['koch_follower'],
        'leaders': ['koch_leader'],
        'fps': 30,
        'robot_type': 'koch_follower',  # LeRobot's
    },
}


### Simulation envs fixed constants
DT = 0.02  # seconds per control step (50 Hz)
CONTROL_HZ = round(1 / DT)  # control steps a second: frame rate of sim videos and sim LeRobot datasets
IMAGE_HW = (480, 640)  # (H, W) of the original's camera frames: sim rendering, real cameras, evaluation default
JOINT_NAMES = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]


ALOHA_STATE_DIM = 2 * (len(JOINT_NAMES) + 1)  # two arms of 6 joints and a gripper
# An SO-100 / SO-101 arm's joints in their servo order (IDs 1..6), as LeRobot names them: real and simulated
SO_JOINT_NAMES = ('shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper')


# per arm: 6 joints, then the two finger joints (left finger, right finger = -left finger)
START_ARM_POSE = [0, -0.96, 1.16, 0, -0.3, 0, 0.02239, -0.02239,
                  0, -0.96, 1.16, 0, -0.3, 0, 0.02239, -0.02239]

# Left finger position limits (qpos[7]), right_finger = -1 * left_finger
MASTER_GRIPPER_POSITION_OPEN = 0.02417
MASTER_GRIPPER_POSITION_CLOSE = 0.01244
PUPPET_GRIPPER_POSITION_OPEN = 0.05800
PUPPET_GRIPPER_POSITION_CLOSE = 0.01844

# Gripper joint limits (qpos[6])
MASTER_GRIPPER_JOINT_OPEN = 0.3083
MASTER_GRIPPER_JOINT_CLOSE = -0.6842
PUPPET_GRIPPER_JOINT_OPEN = 1.4910
PUPPET_GRIPPER_JOINT_CLOSE = -0.6213
MASTER_GRIPPER_JOINT_MID = (MASTER_GRIPPER_JOINT_OPEN + MASTER_GRIPPER_JOINT_CLOSE) / 2


############################ Helper functions ############################
# Gripper values are normalised to 0 (closed) .. 1 (open). The upper-case names are the
# original's and are kept because user code imports them.

def _normalize(x, close, open_):
    return (x - close) / (open_ - close)


def _unnormalize(x, close, open_):
    return x * (open_ - close) + close


def MASTER_GRIPPER_POSITION_NORMALIZE_FN(x):
    return _normalize(x, MASTER_GRIPPER_POSITION_CLOSE, MASTER_GRIPPER_POSITION_OPEN)


def PUPPET_GRIPPER_POSITION_NORMALIZE_FN(x):
    return _normalize(x, PUPPET_GRIPPER_POSITION_CLOSE, PUPPET_GRIPPER_POSITION_OPEN)


def MASTER_GRIPPER_POSITION_UNNORMALIZE_FN(x):
    return _unnormalize(x, MASTER_GRIPPER_POSITION_CLOSE, MASTER_GRIPPER_POSITION_OPEN)


def PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(x):
    return _unnormalize(x, PUPPET_GRIPPER_POSITION_CLOSE, PUPPET_GRIPPER_POSITION_OPEN)


def MASTER2PUPPET_POSITION_FN(x):
    return PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(MASTER_GRIPPER_POSITION_NORMALIZE_FN(x))


def MASTER_GRIPPER_JOINT_NORMALIZE_FN(x):
    return _normalize(x, MASTER_GRIPPER_JOINT_CLOSE, MASTER_GRIPPER_JOINT_OPEN)


def PUPPET_GRIPPER_JOINT_NORMALIZE_FN(x):
    return _normalize(x, PUPPET_GRIPPER_JOINT_CLOSE, PUPPET_GRIPPER_JOINT_OPEN)


def MASTER_GRIPPER_JOINT_UNNORMALIZE_FN(x):
    return _unnormalize(x, MASTER_GRIPPER_JOINT_CLOSE, MASTER_GRIPPER_JOINT_OPEN)


def PUPPET_GRIPPER_JOINT_UNNORMALIZE_FN(x):
    return _unnormalize(x, PUPPET_GRIPPER_JOINT_CLOSE, PUPPET_GRIPPER_JOINT_OPEN)


def MASTER2PUPPET_JOINT_FN(x):
    return PUPPET_GRIPPER_JOINT_UNNORMALIZE_FN(MASTER_GRIPPER_JOINT_NORMALIZE_FN(x))


def MASTER_GRIPPER_VELOCITY_NORMALIZE_FN(x):
    return x / (MASTER_GRIPPER_POSITION_OPEN - MASTER_GRIPPER_POSITION_CLOSE)


def PUPPET_GRIPPER_VELOCITY_NORMALIZE_FN(x):
    return x / (PUPPET_GRIPPER_POSITION_OPEN - PUPPET_GRIPPER_POSITION_CLOSE)


def MASTER_POS2JOINT(x):
    return MASTER_GRIPPER_POSITION_NORMALIZE_FN(x) * (MASTER_GRIPPER_JOINT_OPEN - MASTER_GRIPPER_JOINT_CLOSE) + MASTER_GRIPPER_JOINT_CLOSE


def MASTER_JOINT2POS(x):
    return MASTER_GRIPPER_POSITION_UNNORMALIZE_FN(MASTER_GRIPPER_JOINT_NORMALIZE_FN(x))


def PUPPET_POS2JOINT(x):
    return PUPPET_GRIPPER_POSITION_NORMALIZE_FN(x) * (PUPPET_GRIPPER_JOINT_OPEN - PUPPET_GRIPPER_JOINT_CLOSE) + PUPPET_GRIPPER_JOINT_CLOSE


def PUPPET_JOINT2POS(x):
    return PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(PUPPET_GRIPPER_JOINT_NORMALIZE_FN(x))
