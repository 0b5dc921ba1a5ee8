"""Scripted demonstrations in simulation, the work behind record_sim_episodes.py (its docstring
tells the episode layout and the flags).

`EpisodeRecorder` holds one process's scripted demonstrator, which the task's simulation makes
(simulation/: the original's end-effector rollout for ALOHA), and the joint-space environment
(simulation.make_sim_env) in which the demonstrator's joint trajectory is replayed, rendering only the
recorded cameras. `main` records the missing
episodes of a task, in worker processes when asked, as HDF5 files or staged for a LeRobot dataset.
"""
import contextlib
import os
import time

import numpy as np

import sim_env
from common.files import prepare_folder
from common.folders import drop_staging, is_staging, make_staging
from common.media import OnscreenView
from common.processes import worker_pool
from formats.hdf5 import episode_path, layout_problem, read_episode, rendered_with_shadows, write_episode
from formats.lerobot_writer import LeRobotWriter, count_lerobot_episodes
from simulation import DemoSettings, make_sim_env, simulation_of
from tasks import canonical_task_name, get_sim_task_config, lerobot_settings

### Fixed settings
REPLAY_PAUSE = 0.02  # seconds between onscreen frames of the joint replay
COMPRESSION = 'gzip'  # of --compress: lossless, built into every HDF5
LP_THREADS_VAR = 'LP_NUM_THREADS'  # Mesa llvmpipe rasteriser threads, read when EGL starts
# Wall seconds per control step of one worker at 480x640 on a 2-core AVX2 CPU: 19.0 s a 400-step
# episode (python -m bench.datagen, bench/RESULTS.md). A second worker gains little on 2 cores.
SECONDS_PER_STEP = 19.0 / 400
STAGING_SUFFIX = '.recording'  # --format lerobot: <dataset_dir><suffix> holds the episodes not yet appended


############################ Episode files ############################

def expected_shapes(episode_len, camera_names, image_size, state_dim=sim_env.STATE_DIM):
    """{hdf5 key: (shape, dtype)} of one recorded episode."""
    low_dim = ((episode_len, state_dim), np.float32)
    shapes = {'/action': low_dim, '/observations/qpos': low_dim, '/observations/qvel': low_dim}
    for cam in camera_names:
        shapes[f'/observations/images/{cam}'] = ((episode_len, *image_size, 3), np.uint8)
    return shapes


############################ Rollouts ############################

def episode_rng(seed, episode_idx):
    """The random generator of recorded episode `episode_idx` under --seed: the same episode whatever
    the worker or the order."""
    return np.random.default_rng((seed, episode_idx))


def episode_result(rewards, max_reward):
    """(success, episode return) from the rewards after each step."""
    return bool(np.max(rewards) == max_reward), float(np.sum(rewards))


class EpisodeRecorder:
    """Holds one process's scripted demonstrator and joint-space environment and records episodes with them."""

    def __init__(self, task_name, camera_names, image_size, episode_len, seed=0, inject_noise=False,
                 onscreen_render=False, shadows=True):
        self.task_name, self.episode_len, self.seed, self.shadows = task_name, episode_len, seed, shadows
        self.image_size, self.onscreen = tuple(image_size), onscreen_render
        simulation = simulation_of(task_name)
        self.env = make_sim_env(task_name, camera_names=[], shadows=shadows)  # renders only what is saved
        settings = DemoSettings(episode_len, self.image_size, inject_noise, onscreen_render, shadows)
        self.demonstrator = simulation.make_demonstrator(task_name, self.env, settings)
        physics = self.env.physics
        self.cameras = sim_env.CameraSet(physics, sim_env.resolve_camera_names(physics, camera_names),
                                         self.image_size)
        self.view_name = simulation.view_camera
        view = [self.view_name] if onscreen_render else []
        self.view_camera = sim_env.CameraSet(physics, sim_env.resolve_camera_names(physics, view), self.image_size)

    def replay(self, joint_traj, object_pose):
        """Replay the joint trajectory, rendering the recorded cameras for the first T time steps.

        NOTE(faithful): all T + 1 actions are replayed (success counts every step), but only the
        first T (observation, action) pairs are saved, so obs[t] is followed by action[t].
        """
        steps, state_dim = self.episode_len, joint_traj.shape[1]
        data = {'qpos': np.empty((steps, state_dim)), 'qvel': np.empty((steps, state_dim)),
                'action': joint_traj[:steps],
                'images': {cam: np.empty((steps, *self.image_size, 3), np.uint8) for cam in self.cameras.cameras}}
        self.env.task.set_object_pose(object_pose)
        ts = self.env.reset()
        view = OnscreenView(REPLAY_PAUSE) if self.onscreen else None
        if view:
            view.show(self.view_camera.render()[self.view_name])
        rewards = []
        for t, action in enumerate(joint_traj):
            if t < steps:
                data['qpos'][t], data['qvel'][t] = ts.observation['qpos'], ts.observation['qvel']
                for cam, frame in self.cameras.render_views().items():
                    np.copyto(data['images'][cam][t], frame)  # the only copy of each frame
            ts = self.env.step(action)
            rewards.append(ts.reward)
            if view:
                view.show(self.view_camera.render()[self.view_name])
        if view:
            view.close()
        return data, *episode_result(rewards, self.env.task.max_reward)

    def record(self, episode_idx, path=None, compress=False):
        """Record one episode (written to `path` unless None) -> result dict."""
        start = time.time()
        rng = episode_rng(self.seed, episode_idx)
        joint_traj, object_pose, scripted_rewards = self.demonstrator.rollout(rng)
        ee_success, ee_return = episode_result(scripted_rewards, self.env.task.max_reward)
        data, success, episode_return = self.replay(joint_traj, object_pose)
        if path is not None:  # NOTE(faithful): failed episodes are saved too, as the original did
            write_episode(path, sim=True, compression=COMPRESSION if compress else None, shadows=self.shadows,
                          **data)
        return {'episode_idx': episode_idx, 'success': success, 'episode_return': episode_return,
                'ee_success': ee_success, 'ee_return': ee_return, 'seconds': time.time() - start}


############################ Parallel recording ############################

_WORKER = {}  # per worker process: the recorder and where to write


def _init_worker(recorder_kwargs, dataset_dir, compress):
    _WORKER['recorder'] = EpisodeRecorder(**recorder_kwargs)
    _WORKER['dataset_dir'], _WORKER['compress'] = dataset_dir, compress


def _record_in_worker(episode_idx):
    path = episode_path(_WORKER['dataset_dir'], episode_idx)
    return _WORKER['recorder'].record(episode_idx, path, _WORKER['compress'])


def record_episodes(indices, recorder_kwargs, dataset_dir, compress, num_workers):
    """Yield result dicts as episodes finish (in any order with several workers)."""
    if num_workers == 1 or len(indices) <= 1:
        recorder = EpisodeRecorder(**recorder_kwargs)
        for idx in indices:
            yield recorder.record(idx, episode_path(dataset_dir, idx), compress)
        return
    with single_threaded_software_gl():
        pool = worker_pool(min(num_workers, len(indices)), _init_worker, (recorder_kwargs, dataset_dir, compress))
    with pool:
        yield from pool.imap_unordered(_record_in_worker, indices)


@contextlib.contextmanager
def single_threaded_software_gl():
    """Processes started inside inherit LP_NUM_THREADS=1 (unless the user set it): with one
    episode per core, Mesa's software rasteriser wastes less time on its own threads."""
    user_value = os.environ.get(LP_THREADS_VAR)
    os.environ.setdefault(LP_THREADS_VAR, '1')
    try:
        yield
    finally:
        if user_value is None:
            del os.environ[LP_THREADS_VAR]


############################ Command line ############################

def check_args(args):
    """Validate the arguments; ValueError naming the flag and what was expected."""
    task_name = args['task_name']
    try:
        config = get_sim_task_config(task_name)
    except KeyError as e:
        raise ValueError(f'--task_name: {e.args[0]}') from None
    simulation_of(task_name).check_scripted(task_name)
    if args.get('num_episodes') is not None and args['num_episodes'] < 0:
        raise ValueError(f"--num_episodes must be 0 or more, got {args['num_episodes']}")
    if args.get('num_workers', 1) < 1:
        raise ValueError(f"--num_workers must be 1 or more, got {args['num_workers']}")
    image_size = tuple(args.get('image_size') or sim_env.DEFAULT_IMAGE_SIZE)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ValueError(f'--image_size must be two positive integers H W, got {image_size}')
    if args.get('onscreen_render') and args.get('num_workers', 1) > 1:
        raise ValueError('--onscreen_render shows one episode at a time: use --num_workers 1')
    return config, image_size


def episodes_to_record(dataset_dir, num_episodes, shapes, shadows=True):
    """Indices whose file is missing or unreadable; ValueError if a readable one has another layout
    or was rendered with shadows when these are not (or the other way round)."""
    todo = []
    for idx in range(num_episodes):
        path = episode_path(dataset_dir, idx)
        if not os.path.exists(path):
            todo.append(idx)
            continue
        try:
            problem = layout_problem(path, shapes)
            if not problem and rendered_with_shadows(path) != shadows:
                problem = ('rendered without shadows, no --no_shadows given' if shadows
                           else 'rendered with shadows, --no_shadows given')
        except OSError:
            print(f'{path} is unreadable (interrupted write?): recording it again')
            todo.append(idx)
            continue
        if problem:
            raise ValueError(f'{path} already exists with another layout ({problem}): move it away or '
                             f'choose another --dataset_dir')
        print(f'{path} exists: skipping')
    return todo


def recording_command(task_name, dataset_dir, num_episodes):
    """The command line that records a scripted task's episodes 0..num_episodes-1 into dataset_dir
    (flags the task's config already sets left out)."""
    config = get_sim_task_config(task_name)
    command = f'python record_sim_episodes.py --task_name {task_name}'
    if os.path.abspath(dataset_dir) != os.path.abspath(config['dataset_dir']):
        command += f' --dataset_dir {dataset_dir}'
    if num_episodes != config['num_episodes']:
        command += f' --num_episodes {num_episodes}'
    return command


def expected_minutes(num_episodes, episode_len):
    """Wall minutes one worker takes to record num_episodes at 480x640 on a 2-core CPU (SECONDS_PER_STEP)."""
    return num_episodes * episode_len * SECONDS_PER_STEP / 60


def main(args):
    """Record scripted episodes (args: record_sim_episodes.py's flags) -> the per-episode result dicts."""
    config, image_size = check_args(args)
    task_name = canonical_task_name(args['task_name'])
    dataset_dir = args.get('dataset_dir') or config['dataset_dir']
    num_episodes = config['num_episodes'] if args.get('num_episodes') is None else args['num_episodes']
    camera_names = args.get('camera_names') or config['camera_names']
    recorder_kwargs = dict(task_name=task_name, camera_names=camera_names, image_size=image_size,
                           episode_len=config['episode_len'], seed=args.get('seed', 0),
                           inject_noise=args.get('inject_noise', False),
                           onscreen_render=args.get('onscreen_render', False),
                           shadows=not args.get('no_shadows', False))
    simulation_of(task_name).check_camera_names(task_name, camera_names)
    shapes = expected_shapes(config['episode_len'], camera_names, image_size, simulation_of(task_name).state_dim)
    lerobot = args.get('format', 'hdf5') == 'lerobot'
    first = count_lerobot_episodes(dataset_dir) if lerobot else 0
    episode_dir = staging_folder(dataset_dir) if lerobot else dataset_dir
    prepare_folder(episode_dir, '--dataset_dir')
    todo = [i for i in episodes_to_record(episode_dir, num_episodes, shapes, recorder_kwargs['shadows'])
            if i >= first]
    if not recorder_kwargs['shadows']:
        print('--no_shadows: frames are rendered without shadows, so they differ from the original\'s images')

    results = []
    for result in record_episodes(todo, recorder_kwargs, episode_dir, lerobot or args.get('compress', False),
                                  args.get('num_workers', 1)):
        results.append(result)
        print_result(result)
    if lerobot:
        append_staged(episode_dir, range(first, num_episodes), dataset_dir, task_name, args.get('task'))
    print(f'Saved to {dataset_dir}')
    print(f"Success: {sum(r['success'] for r in results)} / {len(results)}")
    return results


def staging_folder(dataset_dir):
    """<dataset_dir>.recording, this project's staging folder of --format lerobot: kept from an
    interrupted run (its episodes are resumed), made when absent, refused when it is someone else's."""
    staging = dataset_dir.rstrip(os.sep) + STAGING_SUFFIX
    if not is_staging(staging):
        make_staging(staging, f'the episodes to append to {dataset_dir}')
    return staging


def append_staged(staging, indices, dataset_dir, task_name, task=None):
    """Append the staged episode files `indices` to the LeRobot dataset at dataset_dir, then remove
    them; task: the dataset's task text (default: the task's instruction), robot_type the task's."""
    if len(indices):
        settings = lerobot_settings(task_name)
        with LeRobotWriter(dataset_dir, fps=settings['fps'], task=task or settings['task'],
                           robot_type=settings['robot_type'], names=settings['names']) as writer:
            for index in indices:
                writer.add(read_episode(episode_path(staging, index)))
                print(f'episode {index} appended to {dataset_dir} ({writer.vcodec})')
    drop_staging(staging)


def print_result(r):
    episode_idx, episode_return = r['episode_idx'], r['episode_return']
    ee = 'Successful' if r['ee_success'] else 'Failed'
    outcome = f'Successful, {episode_return=}' if r['success'] else 'Failed'
    print(f"{episode_idx=} EE rollout {ee}; replay {outcome} ({r['seconds']:.1f} s)")
