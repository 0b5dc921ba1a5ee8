"""The task registry: the task a name means and its config (SIM_TASK_CONFIGS and REAL_TASK_CONFIGS in
constants.py, the original's tables), its control rate, and the names a LeRobot dataset of it gives
its joints. The one place a task's rate comes from is control_hz.
"""
from constants import (ALOHA_STATE_DIM, CONTROL_HZ, JOINT_NAMES, REAL_TASK_CONFIGS, SIM_TASK_CONFIGS,
                       SO_JOINT_NAMES)


# Short names of the scripted-data tasks (those record_sim_episodes.py makes): accepted wherever a task name is.
TASK_ALIASES = {
    'sim_transfer_cube': 'sim_transfer_cube_scripted',
    'sim_insertion': 'sim_insertion_scripted',
}


def canonical_task_name(task_name):
    """The task a name means: the long name of a short one (TASK_ALIASES), else the name itself."""
    return TASK_ALIASES.get(task_name, task_name)


def sim_task_names():
    """Every sim task name accepted, the short ones with the task they name, for messages and --help."""
    short = [f'{alias} (= {name})' for alias, name in TASK_ALIASES.items() if name in SIM_TASK_CONFIGS]
    return ', '.join(short + sorted(SIM_TASK_CONFIGS))


def get_sim_task_config(task_name):
    """Return the config of a sim task (short names too), or raise a KeyError that lists the known tasks."""
    name = canonical_task_name(task_name)
    if name not in SIM_TASK_CONFIGS:
        raise KeyError(f"unknown task '{task_name}': known sim tasks are {sim_task_names()} "
                       f"(add yours to SIM_TASK_CONFIGS in constants.py)")
    return SIM_TASK_CONFIGS[name]


def get_task_config(task_name):
    """Sim tasks (names beginning with sim_, short ones too) from SIM_TASK_CONFIGS, real-robot tasks
    from REAL_TASK_CONFIGS."""
    # NOTE(faithful): the original tells a simulated task by the name's 'sim_' prefix
    if task_name[:4] == 'sim_':
        return get_sim_task_config(task_name)
    if task_name in SIM_TASK_CONFIGS:
        raise KeyError(f"task '{task_name}' is in SIM_TASK_CONFIGS (constants.py), whose names must begin with "
                       f"'sim_' (the prefix marks a simulated task); real-robot tasks go in REAL_TASK_CONFIGS")
    if task_name not in REAL_TASK_CONFIGS:
        raise KeyError(f"unknown task '{task_name}': sim tasks (constants.py) are {sim_task_names()}; "
                       f"real-robot tasks (REAL_TASK_CONFIGS in constants.py) are "
                       f"{', '.join(sorted(REAL_TASK_CONFIGS))}")
    return REAL_TASK_CONFIGS[task_name]


ROBOT_RATES = {'so': 30}  # control steps a second of a robot's tasks that name none (LeRobot records SO arms at 30)


def so_feature_names(num_arms):
    """LeRobot's feature names of SO arms' values: shoulder_pan.pos, ... (left_shoulder_pan.pos, ... for two)."""
    prefixes = {1: [''], 2: ['left_', 'right_']}.get(num_arms) or [f'arm{i}_' for i in range(num_arms)]
    return [f'{prefix}{joint}.pos' for prefix in prefixes for joint in SO_JOINT_NAMES]


def control_hz(task_config):
    """Control steps a second of a task (its config): its 'fps', else its robot's rate (ROBOT_RATES),
    else CONTROL_HZ, the original's 50. The one place a task's rate comes from."""
    return task_config.get('fps', ROBOT_RATES.get(task_config.get('robot'), CONTROL_HZ))


def lerobot_settings(task_name):
    """What a LeRobot dataset of the task records beside its episodes: {'fps', 'task', 'robot_type',
    'names'} (names None: constants.joint_names)."""
    config = get_task_config(task_name)
    names = None
    if 'followers' in config:  # real SO arms
        names = so_feature_names(len(config['followers']))
    elif 'so_arms' in config:  # simulated SO arms
        names = so_feature_names(config['so_arms'])
    return {'fps': control_hz(config), 'task': config.get('instruction'),
            'robot_type': config.get('robot_type'), 'names': names}


def joint_names(dim):
    """ALOHA's names for its 14 joints (left arm first), else joint_0, joint_1, ..."""
    if dim == ALOHA_STATE_DIM:
        return [f'{side}_{name}' for side in ('left', 'right') for name in JOINT_NAMES + ['gripper']]
    return [f'joint_{i}' for i in range(dim)]


def task_joint_names(task_name, dim):
    """The names of a task's `dim` joints: an SO task's (shoulder_pan, ...), else joint_names(dim)."""
    try:
        names = lerobot_settings(task_name)['names']
    except (KeyError, TypeError):
        names = None
    if names and len(names) == dim:
        return [name.removesuffix('.pos') for name in names]
    return joint_names(dim)
