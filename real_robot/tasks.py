"""Real-robot tasks (aloha_scripts' TASK_CONFIGS): datasets under constants.DATA_DIR.

Add your own task here; episode_len is in control steps of constants.DT.
"""
import os

from constants import DATA_DIR

CAMERA_NAMES = ['cam_high', 'cam_low', 'cam_left_wrist', 'cam_right_wrist']

TASK_CONFIGS = {
    'aloha_wear_shoe': {
        'dataset_dir': os.path.join(DATA_DIR, 'aloha_wear_shoe'),
        'num_episodes': 50,
        'episode_len': 1000,
        'camera_names': list(CAMERA_NAMES),
    },
}


def get_task_config(task_name):
    """Config of a real task, or a KeyError that lists the known ones."""
    if task_name not in TASK_CONFIGS:
        raise KeyError(f"unknown real-robot task '{task_name}': known tasks are {', '.join(sorted(TASK_CONFIGS))} "
                       f'(add yours to TASK_CONFIGS in real_robot/tasks.py)')
    return TASK_CONFIGS[task_name]
