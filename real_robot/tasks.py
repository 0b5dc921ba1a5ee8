"""Real-robot tasks under aloha_scripts' names: TASK_CONFIGS is constants.REAL_TASK_CONFIGS, the table
where your tasks go, and CAMERA_NAMES ALOHA's four cameras."""
from constants import ALOHA_CAMERA_NAMES as CAMERA_NAMES
from constants import REAL_TASK_CONFIGS as TASK_CONFIGS

__all__ = ['CAMERA_NAMES', 'TASK_CONFIGS', 'get_task_config']


def get_task_config(task_name):
    """Config of a real task, or a KeyError that lists the known ones."""
    if task_name not in TASK_CONFIGS:
        raise KeyError(f"unknown real-robot task '{task_name}': known tasks are {', '.join(sorted(TASK_CONFIGS))} "
                       f'(add yours to REAL_TASK_CONFIGS in constants.py)')
    return TASK_CONFIGS[task_name]
