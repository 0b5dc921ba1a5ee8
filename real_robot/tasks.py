"""Real-robot tasks (aloha_scripts' TASK_CONFIGS): datasets under constants.DATA_DIR (ACT_DATA_DIR).

Add your own task here. ALOHA tasks: episode_len in control steps of constants.DT (50 Hz).
SO-100 / SO-101 tasks name their arms (SO_ARMS in settings.py: followers and leaders, left arm
first), their cameras (CAMERA_DEVICES) and their rate; episode_len is in steps of 1 / fps; state
and action have 6 values per arm (real_robot/so_env.py).
"""
import os

from common.paths import DATA_DIR

CAMERA_NAMES = ['cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist']

TASK_CONFIGS = {
    'aloha_wear_shoe': {
        'dataset_dir': os.path.join(DATA_DIR, 'aloha_wear_shoe'),
        'num_episodes': 50,
        'episode_len': 1000,
        'camera_names': list(CAMERA_NAMES),
    },
    'so101_pick_place': {  # one SO-101 arm: state and action 6
        'dataset_dir': os.path.join(DATA_DIR, 'so101_pick_place'),
        'num_episodes': 50,
        'episode_len': 600,  # 20 s at 30 Hz
        'camera_names': ['front', 'wrist'],
        'followers': ['so_follower'],
        'leaders': ['so_leader'],
        'fps': 30,
        'robot_type': 'so101_follower',
    },
    'so101_bimanual': {  # two SO-101 arms: state and action 12
        'dataset_dir': os.path.join(DATA_DIR, 'so101_bimanual'),
        'num_episodes': 50,
        'episode_len': 900,  # 30 s at 30 Hz
        'camera_names': ['front'],
        'followers': ['so_follower_left', 'so_follower_right'],
        'leaders': ['so_leader_left', 'so_leader_right'],
        'fps': 30,
        'robot_type': 'bi_so101_follower',
    },
}


def get_task_config(task_name):
    """Config of a real task, or a KeyError that lists the known ones."""
    if task_name not in TASK_CONFIGS:
        raise KeyError(f"unknown real-robot task '{task_name}': known tasks are {', '.join(sorted(TASK_CONFIGS))} "
                       f'(add yours to TASK_CONFIGS in real_robot/tasks.py)')
    return TASK_CONFIGS[task_name]
