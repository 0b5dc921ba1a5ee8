"""Policy evaluation: roll a trained policy out in simulation (or on the real robot) and report.

`eval_bc(config, ckpt_name)` is what `imitate_episodes.py --eval` runs. It behaves like the
original's: a fixed evaluation seed, one object pose per rollout from the original samplers, the
policy queried every `num_queries` steps (or every step with temporal ensembling), one printed
line per rollout, the success/return summary and `result_<ckpt>.txt`, and `video<i>.mp4` per
rollout. Differences: temporal ensembling keeps only the last `num_queries` chunks (the original
kept an episode_len x (episode_len + num_queries) buffer) with identical results; only the
cameras the policy uses are rendered, at the size it was trained on; rollouts may run in several
processes (`eval_workers`) with the same per-rollout results.

The config dict of `eval_bc` (the original's keys) is read once into `EvalSettings`; the policy
and its `Normalizer` come from the checkpoint folder.
"""
import collections
import dataclasses
import errno
import multiprocessing
import os
import shutil
import sys
import time
import warnings

import numpy as np
import torch

from checkpoint import SAVE_FORMATS, STATS_FILE, policy_file, read_config
from constants import DT
from data import Normalizer, get_norm_stats, image_to_tensor, resize_images
from episodes import count_episodes
from files import atomic_path, atomic_write, load_torch_file, remove_stale_temps
from lerobot_act import is_lerobot_folder
from policy_runtime import TEMPORAL_AGG_K
from processes import die_with_parent

### Fixed evaluation settings (the original's values)
EVAL_SEED = 1000  # set before the object poses are sampled
ONSCREEN_CAM = 'angle'  # camera shown by --onscreen_render
ONSCREEN_HW = (480, 640)  # size of the onscreen view
DEFAULT_IMAGE_HW = (480, 640)  # render size when config['image_size'] is None or absent
VIDEO_FPS = int(1 / DT)  # 50 frames per second: one frame per control step
NON_INTERACTIVE_BACKENDS = {'agg', 'pdf', 'ps', 'svg', 'pgf', 'cairo', 'template'}


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Everything an evaluation reads from its config: the run's keys and the evaluation's own."""
    ckpt_dir: str
    task_name: str
    policy_class: str
    policy_config: dict  # the dict make_policy takes
    camera_names: list
    episode_len: int
    real_robot: bool
    temporal_agg: bool = False  # query every step and ensemble the overlapping chunks
    onscreen_render: bool = False
    image_size: tuple = DEFAULT_IMAGE_HW  # (H, W) the policy sees; sim evaluation renders at it
    shadows: bool = True  # False: sim frames rendered without shadows, as the policy's training frames were
    device: str = 'cpu'
    num_rollouts: int = 50
    eval_workers: int = 1  # rollouts in this many processes
    save_video: bool = True
    robot_backend: str = 'builtin'
    robot_driver: str = 'auto'
    stats_from: str = None  # an episodes folder whose statistics replace the checkpoint's (--stats_from)
    runtime: str = 'torch'  # 'onnxruntime' / 'openvino': the exported policy through policy_runtime.PolicyRunner
    export_dir: str = None  # --runtime onnxruntime: the export (default: exported next to the checkpoint)

    @classmethod
    def of(cls, config):
        """From eval_bc's config dict (None values take the defaults); settings pass through."""
        if isinstance(config, cls):
            return config
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in config]
        if missing:
            raise KeyError(f'evaluation config lacks {missing}')
        settings = cls(**{k: config[k] for k in names if config.get(k) is not None})
        return dataclasses.replace(settings, image_size=tuple(settings.image_size))


class TemporalEnsembler:
    """Temporal ensembling of action chunks, in memory that grows with the chunk size only.

    Call it once per control step with the chunk predicted at that step. It returns the weighted
    average of every stored prediction for the current step, weights exp(-k * i) with i = 0 for the
    oldest prediction, normalised to sum 1 -- exactly the original's average over its
    [episode_len, episode_len + chunk_size, action_dim] buffer, from a ring buffer of the last
    chunk_size chunks.
    """

    def __init__(self, chunk_size, action_dim, k=TEMPORAL_AGG_K, device='cpu'):
        self.chunk_size = chunk_size
        self.k = k
        self.chunks = torch.zeros(chunk_size, chunk_size, action_dim, device=device)  # (K, K, A) ring
        self.t = 0

    def reset(self):
        self.chunks.zero_()
        self.t = 0

    def __call__(self, chunk):
        """chunk (1, K, A) predicted at the current step -> action (1, A) float64 for this step."""
        K, t = self.chunk_size, self.t
        self.chunks[t % K] = chunk[0]
        query_steps = torch.arange(max(0, t - K + 1), t + 1, device=self.chunks.device)  # oldest first
        predictions = self.chunks[query_steps % K, t - query_steps]  # (n, A)
        # NOTE(faithful): the original found the filled rows of its zero-initialised buffer by
        # testing for non-zero values, so a prediction with any component exactly 0.0 is left out.
        predictions = predictions[torch.all(predictions != 0, dim=1)]
        weights = np.exp(-self.k * np.arange(len(predictions)))
        weights = weights / weights.sum()
        weights = torch.from_numpy(weights).to(self.chunks.device).unsqueeze(dim=1)  # (n, 1) float64
        self.t += 1
        return (predictions * weights).sum(dim=0, keepdim=True)


class ChunkedController:
    """Turns a policy into one normalised action per step: query every `policy.action_horizon`
    steps (ACT and CNNMLP: the chunk size) and play the chunk, or (temporal ensembling) query every
    step and ensemble the overlapping chunks. A policy with `obs_horizon` To > 1 (Diffusion) gets
    the last To observations, the first one repeated at the start of the episode as in training."""

    def __init__(self, policy, temporal_agg, device):
        self.policy = policy
        self.query_frequency = 1 if temporal_agg else policy.action_horizon
        self.ensembler = None
        if temporal_agg:
            self.ensembler = TemporalEnsembler(policy.num_queries, policy.action_dim, device=device)
        self.history = collections.deque(maxlen=policy.obs_horizon)
        self.chunk = None

    def reset(self):
        self.chunk = None
        self.history.clear()
        self.policy.reset()
        if self.ensembler is not None:
            self.ensembler.reset()

    def observation(self, qpos, image):
        """qpos (1, S), image (1, K, 3, H, W) -> the policy's inputs, with a time axis when To > 1."""
        if self.history.maxlen == 1:
            return qpos, image
        while len(self.history) < self.history.maxlen - 1:
            self.history.append((qpos, image))
        self.history.append((qpos, image))
        return (torch.stack([q for q, _ in self.history], dim=1),  # (1, To, S)
                torch.stack([im for _, im in self.history], dim=1))  # (1, To, K, 3, H, W)

    def __call__(self, t, qpos, image):
        """qpos (1, S), image (1, K, 3, H, W) of step t -> normalised action (A,) numpy."""
        inputs = self.observation(qpos, image)
        if t % self.query_frequency == 0:
            self.chunk = self.policy.action_chunk(*inputs)  # (1, num_queries, A)
        if self.ensembler is not None:
            raw_action = self.ensembler(self.chunk)
        else:
            raw_action = self.chunk[:, t % self.query_frequency]
        return raw_action.squeeze(0).cpu().numpy()


def summary_text(highest_rewards, episode_returns, max_reward):
    """The original's summary: success rate, average return and the `Reward >= r` table."""
    num_rollouts = len(highest_rewards)
    highest_rewards = np.array(highest_rewards)
    success_rate = np.mean(highest_rewards == max_reward)
    avg_return = np.mean(episode_returns)
    text = f'\nSuccess rate: {success_rate}\nAverage return: {avg_return}\n\n'
    for r in range(max_reward + 1):
        count = (highest_rewards >= r).sum()
        rate = count / num_rollouts
        text += f'Reward >= {r}: {count}/{num_rollouts} = {rate * 100}%\n'
    return text


def result_file_name(ckpt_name):
    """'policy_best.ckpt' (or .safetensors) -> 'result_policy_best.txt'."""
    base = os.path.basename(ckpt_name)
    stem, ext = os.path.splitext(base)
    return f"result_{stem if ext in SAVE_FORMATS.values() else base}.txt"


def write_result_file(path, summary, episode_returns, highest_rewards):
    """The original's result file: the summary, then the returns and highest rewards as lists."""
    text = f'{summary}{list(episode_returns)!r}\n\n{list(highest_rewards)!r}'
    atomic_write(path, lambda f: f.write(text), mode='w')


def _python_number(x):
    return x.item() if isinstance(x, np.generic) else x


def episode_outcome(rewards):
    """Per-step rewards -> (episode return, highest reward) as plain Python numbers."""
    rewards = np.array(rewards)
    # NOTE(faithful): steps without a reward (None) are left out of the return, as in the original.
    rewards = rewards[rewards != None]  # noqa: E711 (element-wise comparison)
    if len(rewards) == 0:
        return 0, 0
    return _python_number(np.sum(rewards)), _python_number(np.max(rewards))


### Loading
def _train_command(settings):
    return (f"python imitate_episodes.py --task_name {settings.task_name} --ckpt_dir {settings.ckpt_dir} "
            f"--policy_class {settings.policy_class} ... (the flags used for training, without --eval)")


def load_stats(config):
    """The checkpoint folder's Normalizer (dataset_stats.pkl), checked against the policy's sizes."""
    from policy import policy_type
    settings = EvalSettings.of(config)
    stats_path = os.path.join(settings.ckpt_dir, STATS_FILE)
    if settings.stats_from:
        return Normalizer(get_norm_stats(settings.stats_from, count_episodes(settings.stats_from)),
                          policy_type(settings.policy_class).action_normalization, source=settings.stats_from)
    if not os.path.isfile(stats_path) and is_lerobot_folder(settings.ckpt_dir):
        from lerobot_act import read_lerobot_config, statistics_from_lerobot
        stats = statistics_from_lerobot(settings.ckpt_dir, read_lerobot_config(settings.ckpt_dir))[0]
        return Normalizer(stats, source=settings.ckpt_dir)
    if not os.path.isfile(stats_path):
        raise FileNotFoundError(f'dataset statistics not found: {stats_path}; training writes it: '
                                f'{_train_command(settings)}')
    cls = policy_type(settings.policy_class)
    normalizer = Normalizer.load(stats_path, cls.action_normalization)
    cfg = cls.resolve_config(settings.policy_config)
    normalizer.check_sizes(cfg['state_dim'], cfg['action_dim'], stats_path)
    return normalizer


def load_lerobot_policy(settings):
    """The ACT of a LeRobot pretrained_model/ folder, its features' roles printed."""
    from lerobot_act import feature_listing, load_lerobot_weights, read_lerobot_checkpoint
    from policy import make_policy
    checkpoint = read_lerobot_checkpoint(settings.ckpt_dir, statistics=False)
    print(f'LeRobot ACT checkpoint {settings.ckpt_dir}: {feature_listing(checkpoint["features"])}')
    policy = make_policy('ACT', settings.policy_config, load_pretrained=False)
    load_lerobot_weights(policy, checkpoint)
    return policy.to(settings.device).eval()


def load_policy(config, ckpt_name):
    """Build the configured policy and load the checkpoint into it, on the settings' device."""
    from policy import checkpoint_policy_class, make_policy
    settings = EvalSettings.of(config)
    ckpt_path = policy_file(settings.ckpt_dir, ckpt_name)
    if not os.path.isfile(ckpt_path) and is_lerobot_folder(settings.ckpt_dir):
        return load_lerobot_policy(settings)
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(f'checkpoint not found: {ckpt_path}; train one first: {_train_command(settings)} '
                                f'or pick another checkpoint with --eval_ckpt')
    # the checkpoint replaces the initial weights: no ImageNet trunk is fetched
    policy = make_policy(settings.policy_class, settings.policy_config, load_pretrained=False)
    state = load_torch_file(ckpt_path, 'checkpoint', map_location=settings.device)
    written_by = checkpoint_policy_class(state)
    if written_by is not None and written_by != settings.policy_class:
        raise ValueError(f'{ckpt_path} holds a {written_by} policy but the policy class is {settings.policy_class}: '
                         f'pass --policy_class {written_by} (config.json in --ckpt_dir names the class it trained)')
    try:
        policy.deserialize(state)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ValueError(f'{ckpt_path} does not match the {settings.policy_class} policy built from the '
                         f'given flags (chunk size, state/action size, model size must be those used '
                         f'for training): {e}') from e
    policy.to(settings.device)
    policy.eval()
    return policy


### Environments
def make_env(settings):
    """-> (env, max_reward). Sim tasks render only the policy's cameras at the policy's size."""
    if settings.real_robot:
        import real_robot
        env = real_robot.make_eval_env(backend=settings.robot_backend, driver=settings.robot_driver,
                                       camera_names=settings.camera_names, image_size=settings.image_size,
                                       task_name=settings.task_name)
        # NOTE(faithful): the real robot gives no reward, so "success" is a highest reward of 0.
        return env, 0
    from sim_env import make_sim_env
    env = make_sim_env(settings.task_name, camera_names=settings.camera_names, image_size=settings.image_size,
                       shadows=settings.shadows)
    return env, env.task.max_reward


def sample_rollout_poses(task_name, num_rollouts):
    """Object pose of every rollout, drawn in rollout order from the global numpy RNG."""
    from sim_env import sample_object_pose
    return [sample_object_pose(task_name, rng=np.random) for _ in range(num_rollouts)]


def get_image(ts, camera_names, size, device):
    """Observation images -> (1, num_cams, 3, H, W) float32 in [0, 1], and the video frame."""
    frames = np.stack([ts.observation['images'][cam] for cam in camera_names])  # (num_cams, h, w, 3)
    frames = resize_images(frames, size)  # (num_cams, H, W, 3); real-robot cameras may differ in size
    video_frame = np.concatenate(list(frames), axis=1)  # (H, W * num_cams, 3)
    return image_to_tensor(frames, device).unsqueeze(0), video_frame


### Output
class VideoWriter:
    """H.264 mp4 written frame by frame through files.atomic_path: in place once closed and
    complete, and no file at all when the rollout fails (abort) or ffmpeg could not write every
    frame (a full disk: ffmpeg exits without a word, so close() counts the frames written)."""

    def __init__(self, path, fps=VIDEO_FPS):
        import imageio
        self.path, self.frames = path, 0
        self.target = atomic_path(path)
        self.tmp = self.target.__enter__()
        self.writer = imageio.get_writer(self.tmp, format='FFMPEG', fps=fps, codec='libx264', macro_block_size=2,
                                         ffmpeg_log_level='error')

    def append(self, frame):
        self.writer.append_data(frame)
        self.frames += 1

    def close(self):
        self.writer.close()
        try:
            self._check_complete()
        except OSError as err:
            self.target.__exit__(type(err), err, err.__traceback__)
            raise
        self.target.__exit__(None, None, None)

    def _check_complete(self):
        import imageio_ffmpeg
        try:
            written = imageio_ffmpeg.count_frames_and_secs(self.tmp)[0]
        except (RuntimeError, OSError):
            written = 0
        if written != self.frames:
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
            raise OSError(errno.EIO, f'{self.path} could not be written completely: ffmpeg wrote {written} of '
                                     f'{self.frames} frames ({free / 1e6:.0f} MB free on its device)')

    def abort(self, error):
        self.writer.close()
        self.target.__exit__(type(error), error, error.__traceback__)


class OnscreenView:
    """Live view of the 'angle' camera in a matplotlib window."""

    def __init__(self):
        import matplotlib.pyplot as plt
        self.plt = plt
        self.ax = plt.subplot()
        self.image = None
        plt.ion()

    def show(self, env):
        frame = env.physics.render(height=ONSCREEN_HW[0], width=ONSCREEN_HW[1], camera_id=ONSCREEN_CAM)
        if self.image is None:
            self.image = self.ax.imshow(frame)
        self.image.set_data(frame)
        self.plt.pause(DT)

    def close(self):
        self.plt.close()


def display_available():
    if sys.platform.startswith('linux') and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')):
        return False
    import matplotlib.pyplot as plt
    return plt.get_backend().lower() not in NON_INTERACTIVE_BACKENDS


def rollout_line(rollout_id, episode_return, highest_reward, max_reward):
    return (f'Rollout {rollout_id}\nepisode_return={episode_return}, episode_highest_reward={highest_reward}, '
            f'env_max_reward={max_reward}, Success: {highest_reward == max_reward}')


### Rollouts
class Evaluator:
    """Everything one process needs to run rollouts: env, policy, normaliser, controller."""

    def __init__(self, config, policy, normalizer):
        """policy and normalizer: the torch policy and its statistics; both None with runtime
        'onnxruntime', which runs settings.export_dir through a PolicyRunner instead."""
        self.settings = EvalSettings.of(config)
        self.device = self.settings.device
        self.policy = policy
        self.normalizer = normalizer
        self.env, self.max_reward = make_env(self.settings)
        if self.settings.runtime != 'torch':
            from policy_runtime import PolicyRunner
            self.runner = PolicyRunner(self.settings.export_dir, self.settings.temporal_agg,
                                       threads=torch.get_num_threads(), engine=self.settings.runtime)
        else:
            self.runner = None
            self.controller = ChunkedController(self.policy, self.settings.temporal_agg, self.device)
        self.onscreen = self.settings.onscreen_render and not self.settings.real_robot
        clock = getattr(self.env, 'clock', None)  # real robots: their control rate (SO arms 30 Hz)
        self.video_fps = round(1 / clock.dt) if getattr(clock, 'dt', None) else VIDEO_FPS

    def policy_inputs(self, ts):
        """-> qpos (1, S) normalised, image (1, num_cams, 3, H, W), video frame (H, W * num_cams, 3)."""
        qpos = self.normalizer.normalize_qpos(np.array(ts.observation['qpos']))
        qpos = torch.from_numpy(qpos).to(self.device).unsqueeze(0)
        image, frame = get_image(ts, self.settings.camera_names, self.settings.image_size, self.device)
        return qpos, image, frame

    def next_action(self, t, ts):
        """The action of step t for time step ts, in robot units, and the video frame."""
        if self.runner is None:
            qpos, image, frame = self.policy_inputs(ts)
            return self.normalizer.unnormalize_action(self.controller(t, qpos, image)), frame
        frames = np.stack([ts.observation['images'][cam] for cam in self.settings.camera_names])  # (K, h, w, 3)
        frames = resize_images(frames, self.settings.image_size)  # (K, H, W, 3)
        action = self.runner.act(np.asarray(ts.observation['qpos'], dtype=np.float32), frames)
        return action, np.concatenate(list(frames), axis=1)

    def rollout(self, rollout_id, pose=None, video_path=None):
        """One episode -> dict with rollout_id, episode_return, highest_reward, max_reward, rewards,
        final_qpos, final_env_state (sim), video_path and wall_s."""
        start = time.perf_counter()
        # fixes the sampling noise of stochastic policies (Diffusion); ACT and CNNMLP use none
        torch.manual_seed(EVAL_SEED + rollout_id)
        if pose is not None:
            self.env.task.set_object_pose(pose)
        ts = self.env.reset()
        if self.runner is not None:
            self.runner.reset(seed=EVAL_SEED + rollout_id)
        else:
            self.controller.reset()
        video = VideoWriter(video_path, fps=self.video_fps) if video_path else None
        view = OnscreenView() if self.onscreen else None
        try:
            ts, rewards = self._run_episode(ts, video, view)
        except BaseException as error:
            if video is not None:
                video.abort(error)
            raise
        finally:
            if view is not None:
                view.close()
        if video is not None:
            video.close()
        if self.settings.real_robot:
            import real_robot
            real_robot.open_grippers(self.env, self.settings.robot_backend)
        episode_return, highest_reward = episode_outcome(rewards)
        return {'rollout_id': rollout_id, 'episode_return': episode_return, 'highest_reward': highest_reward,
                'max_reward': self.max_reward, 'rewards': rewards, 'final_qpos': np.array(ts.observation['qpos']),
                'final_env_state': np.array(ts.observation.get('env_state')), 'video_path': video_path,
                'wall_s': time.perf_counter() - start}

    def _run_episode(self, ts, video, view):
        """Step the policy from time step `ts` for episode_len steps -> (last time step, rewards)."""
        rewards = []
        with torch.inference_mode():
            for t in range(self.settings.episode_len):
                if view is not None:
                    view.show(self.env)
                action, frame = self.next_action(t, ts)  # (A,) in robot units
                if video is not None:
                    video.append(frame)
                ts = self.env.step(action)
                rewards.append(ts.reward)
        return ts, rewards


def _video_path(settings, rollout_id, save_episode):
    if save_episode and settings.save_video:
        return os.path.join(settings.ckpt_dir, f'video{rollout_id}.mp4')
    return None


_WORKER = {}  # the Evaluator of a worker process


def _init_worker(parent_pid, settings, ckpt_name, num_threads):
    die_with_parent(parent_pid)
    torch.set_num_threads(num_threads)
    if settings.runtime != 'torch':
        _WORKER['evaluator'] = Evaluator(settings, None, None)
    else:
        _WORKER['evaluator'] = Evaluator(settings, load_policy(settings, ckpt_name), load_stats(settings))


def _worker_rollout(job):
    rollout_id, pose, video_path = job
    return _WORKER['evaluator'].rollout(rollout_id, pose, video_path)


def run_parallel(settings, ckpt_name, jobs, num_workers):
    """Yield rollout results in rollout order from `num_workers` processes, each with its own
    env and policy loaded from the checkpoint."""
    num_threads = max(1, torch.get_num_threads() // num_workers)
    if 'forkserver' in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context('forkserver')
        context.set_forkserver_preload(['evaluate', 'policy', 'sim_env'])  # imported once, not per worker
    else:
        context = multiprocessing.get_context('spawn')
    initargs = (os.getpid(), settings, ckpt_name, num_threads)
    with context.Pool(num_workers, initializer=_init_worker, initargs=initargs) as pool:
        yield from pool.imap(_worker_rollout, jobs)


def _prompt_between_rollouts(rollout_id):
    if sys.stdin is not None and sys.stdin.isatty():
        input(f'Reset the scene for rollout {rollout_id}, then press Enter to start it...')


def _rollouts_in_process(evaluator, jobs, real_robot):
    try:
        for rollout_id, pose, video_path in jobs:
            if real_robot:
                _prompt_between_rollouts(rollout_id)
            yield evaluator.rollout(rollout_id, pose, video_path)
    finally:
        evaluator.env.close()  # the real robot goes to its safe pose with torque off


def eval_bc(config, ckpt_name, save_episode=True):
    """Roll the checkpoint out config['num_rollouts'] times -> (success_rate, avg_return).
    Writes result_{checkpoint}.txt (the original's) and report.html (report.py)."""
    from report import write_report
    settings = EvalSettings.of(config)
    remove_stale_temps(settings.ckpt_dir)  # videos and results of killed runs
    if not settings.real_robot and not settings.shadows:
        print('Rendering without shadows, as the training episodes were (config.json: "shadows": false): '
              "the frames differ from the original's")
    results = []
    for result in rollout_results(settings, ckpt_name, save_episode):
        results.append(result)
        print(rollout_line(result['rollout_id'], result['episode_return'], result['highest_reward'],
                           result['max_reward']))
        if result['video_path'] is not None:
            print(f'Saved video to: {result["video_path"]}')

    max_reward = results[-1]['max_reward']
    episode_returns = [r['episode_return'] for r in results]
    highest_rewards = [r['highest_reward'] for r in results]
    summary = summary_text(highest_rewards, episode_returns, max_reward)
    print(summary)
    write_result_file(os.path.join(settings.ckpt_dir, result_file_name(ckpt_name)), summary,
                      episode_returns, highest_rewards)
    report = write_report(settings.ckpt_dir, ckpt_name, results, max_reward, read_config(settings.ckpt_dir))
    print(f'Report: {report}')
    return float(np.mean(np.array(highest_rewards) == max_reward)), float(np.mean(episode_returns))


def rollout_results(config, ckpt_name, save_episode=True):
    """Yield the result dict of every rollout, in rollout order, from one or several processes."""
    from train import set_seed
    set_seed(EVAL_SEED)
    settings, num_workers = _checked_settings(EvalSettings.of(config))
    if settings.runtime != 'torch':
        settings = dataclasses.replace(settings, export_dir=exported_policy(settings, ckpt_name))
        policy = normalizer = None
    else:
        policy = load_policy(settings, ckpt_name)  # bad inputs fail here, before any worker starts
        normalizer = load_stats(settings)
        print(f'Loaded: {policy_file(settings.ckpt_dir, ckpt_name)}')
    if settings.real_robot:
        poses = [None] * settings.num_rollouts
    else:
        poses = sample_rollout_poses(settings.task_name, settings.num_rollouts)
    jobs = [(i, poses[i], _video_path(settings, i, save_episode)) for i in range(settings.num_rollouts)]
    if num_workers == 1:
        yield from _rollouts_in_process(Evaluator(settings, policy, normalizer), jobs, settings.real_robot)
    else:
        del policy
        yield from run_parallel(settings, ckpt_name, jobs, num_workers)


def source_file(settings, ckpt_name):
    """The weights file the checkpoint `ckpt_name` is read from (a LeRobot folder's model.safetensors)."""
    path = policy_file(settings.ckpt_dir, ckpt_name)
    if not os.path.isfile(path) and is_lerobot_folder(settings.ckpt_dir):
        from lerobot_act import MODEL_FILE
        return os.path.join(settings.ckpt_dir, MODEL_FILE)
    return path


def exported_policy(settings, ckpt_name):
    """The export --runtime onnxruntime / openvino runs: settings.export_dir, or <ckpt_dir>/export_<checkpoint>
    (exported now when absent); it must come from the checkpoint being evaluated."""
    from policy_runtime import ExportError, file_sha256, read_manifest
    ckpt_path = source_file(settings, ckpt_name)
    folder = settings.export_dir
    if folder is None:
        folder = os.path.join(settings.ckpt_dir, f'export_{os.path.splitext(os.path.basename(ckpt_path))[0]}')
        if not os.path.isdir(folder):
            from export_policy import export
            print(f'Exporting {ckpt_path} to {folder} for --runtime {settings.runtime}')
            export(settings, ckpt_name, 'onnx', folder)
    manifest = read_manifest(folder)
    if os.path.isfile(ckpt_path) and manifest['source_checkpoint']['sha256'] != file_sha256(ckpt_path):
        raise ExportError(f'{folder} was exported from another checkpoint than {ckpt_path} (its SHA-256 differs '
                          f'from policy.json\'s source_checkpoint): export this one, or pass its --export_dir')
    print(f'Loaded: {folder} ({manifest["format"]}{", " + manifest["quantize"] if manifest["quantize"] else ""}, '
          f'from {manifest["source_checkpoint"]["file"]})')
    return folder


def _checked_settings(settings):
    """-> (settings, number of worker processes), with settings that cannot apply turned off loudly."""
    num_workers = settings.eval_workers
    if settings.num_rollouts < 1:
        raise ValueError(f'--num_rollouts must be at least 1, got {settings.num_rollouts}')
    if num_workers < 1:
        raise ValueError(f'--eval_workers must be at least 1, got {num_workers}')
    if settings.real_robot and num_workers > 1:
        warnings.warn('--eval_workers is ignored on the real robot: rollouts run one at a time')
        num_workers = 1
    if settings.onscreen_render and not settings.real_robot and not display_available():
        warnings.warn('--onscreen_render: no display found (set DISPLAY or use an interactive matplotlib '
                      'backend); evaluating without the live view')
        settings = dataclasses.replace(settings, onscreen_render=False)
    if settings.onscreen_render and num_workers > 1:
        warnings.warn('--onscreen_render shows one process only: running rollouts with --eval_workers 1')
        num_workers = 1
    return settings, num_workers
