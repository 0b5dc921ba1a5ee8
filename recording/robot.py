"""Teleoperated recording on the real robot, the work behind record_episodes.py (its docstring tells
the layout and the flags): the opening ceremony, the leaders copied to the followers while the
cameras record, and the episode stored as an HDF5 file or appended to a LeRobot dataset; or the
leaders copied with nothing recorded (--teleop_only)."""
import contextlib
import functools
import os
import time

import numpy as np
from tqdm import tqdm

import real_robot
from common.files import prepare_folder
from constants import DT, MASTER_GRIPPER_JOINT_MID, PUPPET_GRIPPER_JOINT_CLOSE, PUPPET_GRIPPER_JOINT_OPEN
from formats.episode import Episode
from formats.hdf5 import episode_path, store_episode
from formats.lerobot_writer import append_episodes, count_lerobot_episodes
from real_robot import settings
from real_robot.robots import robot_of
from real_robot.robot_utils import get_arm_gripper_positions, move_arms, move_grippers, torque_off, torque_on
from tasks import lerobot_settings

MAX_EPISODE_INDEX = 1000  # get_auto_index looks for a free episode_{i} up to this


def opening_ceremony(master_bot_left, master_bot_right, puppet_bot_left, puppet_bot_right):
    """Move all four arms to the start pose, then wait until both leader grippers are closed."""
    for puppet, master in ((puppet_bot_left, master_bot_left), (puppet_bot_right, master_bot_right)):
        puppet.reboot_gripper()
        puppet.set_operating_mode('arm', settings.PUPPET_ARM_MODE)
        puppet.set_operating_mode('gripper', settings.PUPPET_GRIPPER_MODE)
        master.set_operating_mode('arm', 'position')
        master.set_operating_mode('gripper', 'position')
    for bot in (puppet_bot_left, master_bot_left, puppet_bot_right, master_bot_right):
        torque_on(bot)

    all_bots = [master_bot_left, puppet_bot_left, master_bot_right, puppet_bot_right]
    move_arms(all_bots, [settings.START_ARM_QPOS] * 4, move_time=settings.OPENING_MOVE_TIME_S)
    move_grippers(all_bots, [MASTER_GRIPPER_JOINT_MID, PUPPET_GRIPPER_JOINT_CLOSE] * 2, move_time=0.5)

    # the operator closes both leader grippers to start; their arms stay powered until then
    master_bot_left.torque(False, 'gripper')
    master_bot_right.torque(False, 'gripper')
    print('Close the gripper to start')
    # NOTE(faithful): with the original gripper calibration the leaders' mid position is already
    # below the threshold, so recording starts as soon as the grippers reach it.
    while not (get_arm_gripper_positions(master_bot_left) < settings.TELEOP_START_THRESHOLD
               and get_arm_gripper_positions(master_bot_right) < settings.TELEOP_START_THRESHOLD):
        time.sleep(DT / 10)
    torque_off(master_bot_left)
    torque_off(master_bot_right)
    print('Started!')


def teleoperate(env, read_action, max_timesteps):
    """Step env with read_action() (the leaders' pose) -> (timesteps (T + 1), actions (T), [t0, t1, t2] per step)."""
    ts = env.reset(fake=True)
    timesteps, actions, actual_dt_history = [ts], [], []
    for _ in tqdm(range(max_timesteps), unit='step'):
        t0 = time.time()
        action = read_action()
        t1 = time.time()
        ts = env.step(action)
        t2 = time.time()
        timesteps.append(ts)
        actions.append(action)
        actual_dt_history.append([t0, t1, t2])
    return timesteps, actions, actual_dt_history


def print_dt_diagnosis(actual_dt_history):
    history = np.array(actual_dt_history)  # (T, 3)
    get_action_time = history[:, 1] - history[:, 0]
    step_env_time = history[:, 2] - history[:, 1]
    total_time = history[:, 2] - history[:, 0]
    freq_mean = 1 / np.mean(total_time)
    print(f'Avg freq: {freq_mean:.2f} Get action: {np.mean(get_action_time):.3f} '
          f'Step env: {np.mean(step_env_time):.3f}')
    return freq_mean


def save_episode(save, timesteps, actions, camera_names):
    """Save the episode with save(Episode), atomically; observation t pairs with action t."""
    steps = timesteps[:len(actions)]  # the observation after the last action is not kept
    t0 = time.time()
    low_dim = {key: np.array([ts.observation[key] for ts in steps], np.float32) for key in ('qpos', 'qvel', 'effort')}
    images = {cam: np.stack([ts.observation['images'][cam] for ts in steps]) for cam in camera_names}  # (T, H, W, 3)
    save(Episode(action=np.array(actions, np.float32), images=images, sim=False, **low_dim))
    print(f'Saving: {time.time() - t0:.1f} secs')


@contextlib.contextmanager
def followers(make_env, leaders, powered_leaders=()):
    """The followers' env from make_env() for a session with `leaders`: on a fault or Ctrl-C the
    powered leaders lose torque and the followers take the safe stop; every port is closed at the end."""
    env = None
    try:
        env = make_env()
        yield env
    except (real_robot.RobotFault, KeyboardInterrupt) as e:
        for bot in powered_leaders:
            try:
                bot.torque(False, 'all')
            except real_robot.RobotFault as failure:
                print(f"Could not confirm torque off of '{bot.name}': {failure}")
        if env is not None:
            env.safety_stop(stop_reason(e))
        raise
    finally:
        if env is not None:
            env.close()
        for leader in leaders:
            leader.close()


@contextlib.contextmanager
def aloha_session(camera_names, driver):
    """(env, read_action) of ALOHA's followers and leaders, past the opening ceremony; the arms end
    without torque."""
    masters = real_robot.make_master_bots(driver, init_node=True)
    make_env = functools.partial(real_robot.make_real_env, init_node=False, setup_robots=False, driver=driver,
                                 camera_names=camera_names)
    with followers(make_env, masters, powered_leaders=masters) as env:
        opening_ceremony(*masters, env.puppet_bot_left, env.puppet_bot_right)
        yield env, lambda: real_robot.get_action(*masters)
        for master in masters:
            torque_on(master)
        move_grippers([env.puppet_bot_left, env.puppet_bot_right], [PUPPET_GRIPPER_JOINT_OPEN] * 2, move_time=0.5)


@contextlib.contextmanager
def leader_arms_session(robot, task_config, driver):
    """(env, read_action) of a task's followers copying its leader arms (SO, Koch, ...), the followers moved
    to the leaders' pose first; the followers end without torque. A simulated follower is paced at the
    task's rate, for the person at the leader."""
    if robot.check_driver:
        robot.check_driver(driver)
    make_env = functools.partial(robot.teleop_env, task_config, driver)
    leaders = robot.leaders(task_config)
    with followers(make_env, leaders) as env:
        move_arms(list(env.bots), list(robot.read_leaders(leaders).reshape(len(leaders), -1)),
                  move_time=robot.opening_move_time())
        print('Started!')
        yield env, lambda: robot.read_leaders(leaders)


SESSIONS = {  # a robot's Robot.teleop -> its teleoperation session (followers, leaders) for a task
    'aloha': lambda robot, task_config, driver: aloha_session(task_config['camera_names'], driver),
    'leader_arms': leader_arms_session,
}


def stop_reason(error):
    return 'interrupted (Ctrl-C)' if isinstance(error, KeyboardInterrupt) else str(error)


def session(task_config, driver):
    """The teleoperation session of the task's robot (real_robot/robots/): ALOHA's ceremony or leader arms."""
    robot = robot_of(task_config)
    return SESSIONS[robot.teleop](robot, task_config, driver)


def capture_episode(task_config, save, driver):
    """Teleoperate one episode of the task while recording, then save it with save(Episode)."""
    with session(task_config, driver) as (env, read_action):
        timesteps, actions, actual_dt_history = teleoperate(env, read_action, task_config['episode_len'])
    print_dt_diagnosis(actual_dt_history)
    save_episode(save, timesteps, actions, task_config['camera_names'])


def teleoperate_only(task_config, driver, num_steps=None):
    """The followers copy the leaders at the task's rate, nothing recorded, until Ctrl-C (or num_steps
    steps), then the safe stop -> the steps run. The progress bar shows the achieved rate."""
    steps = 0
    try:
        with session(task_config, driver) as (env, read_action):
            env.reset(fake=True)
            bar = tqdm(total=num_steps, unit='step', desc='teleoperation (Ctrl-C ends it)')
            while num_steps is None or steps < num_steps:
                env.step(read_action())
                steps += 1
                bar.update()
            bar.close()
    except KeyboardInterrupt:
        print(f'Teleoperation ended after {steps} steps')
    return steps


def get_auto_index(dataset_dir):
    """The first index i with no episode_{i}.hdf5 in dataset_dir."""
    for i in range(MAX_EPISODE_INDEX + 1):
        if not os.path.isfile(episode_path(dataset_dir, i)):
            return i
    raise RuntimeError(f'{dataset_dir}: no free episode index up to {MAX_EPISODE_INDEX}')


def main(args):
    """Record one episode (args: record_episodes.py's flags) -> the file or dataset it went to; with
    args['teleop_only'] teleoperate without recording -> None."""
    task_config = real_robot.get_task_config(args['task_name'])
    if args.get('teleop_only'):
        teleoperate_only(task_config, args.get('robot_driver', 'auto'), args.get('num_steps'))
        return None
    dataset_dir = args.get('dataset_dir') or task_config['dataset_dir']
    prepare_folder(dataset_dir, '--dataset_dir')
    if args.get('format', 'hdf5') == 'lerobot':
        target, save = lerobot_target(args, dataset_dir, task_config)
    else:
        episode_idx = args['episode_idx'] if args['episode_idx'] is not None else get_auto_index(dataset_dir)
        target = episode_path(dataset_dir, episode_idx)
        if os.path.isfile(target) and not args.get('overwrite'):
            raise FileExistsError(f'{target} exists: choose another --episode_idx, leave it out to take the '
                                  'next free one, or pass --overwrite')
        print(os.path.splitext(os.path.basename(target))[0] + '\n')
        save = functools.partial(store_episode, target)
    capture_episode(task_config, save, args.get('robot_driver', 'auto'))
    return target


def lerobot_target(args, dataset_dir, task_config):
    """(dataset_dir, save) appending the episode to the LeRobot dataset there: the next index only."""
    index = count_lerobot_episodes(dataset_dir)
    if args.get('episode_idx') not in (None, index):
        raise ValueError(f"--episode_idx {args['episode_idx']}: a LeRobot dataset takes episodes in order; "
                         f"{dataset_dir} takes episode {index} next (leave --episode_idx out)")
    if args.get('overwrite'):
        raise ValueError('--overwrite: episodes of a LeRobot dataset are not replaced; record into a new --dataset_dir')
    print(f'{dataset_dir}: LeRobot episode {index}\n')
    task = args.get('task') or args['task_name']
    writer = {**lerobot_settings(args['task_name']), 'task': task}  # the task's rate, robot type and names
    return dataset_dir, lambda episode: append_episodes(dataset_dir, [episode], **writer)
