"""Policy evaluation: roll a trained policy out in simulation (or on the real robot) and report.

`eval_bc(config, ckpt_name)` is what `imitate_episodes.py --eval` runs. It behaves like the
original's: a fixed evaluation seed, one object pose per rollout from the original samplers, the
policy queried every `chunk_size` steps (or every step with temporal ensembling), one printed
line per rollout, the success/return summary and `result_<ckpt>.txt`, and `video<i>.mp4` per
rollout. Differences: temporal ensembling keeps only the last `chunk_size` chunks (the original
kept an episode_len x (episode_len + num_queries) buffer) with identical results; only the
cameras the policy uses are rendered, at the size it was trained on; rollouts may run in several
processes (`eval_workers`) with the same per-rollout results.

The config dict of `eval_bc` (the original's keys) is read once into `EvalSettings`; the policy
and its `Normalizer` come from the checkpoint folder.
"""
import dataclasses
import os
import sys
import time
import warnings

import numpy as np
import torch

from common.files import remove_stale_temps
from common.media import OnscreenView, VideoWriter, display_available
from common.processes import worker_pool
from common.seeds import set_seed
from constants import CONTROL_HZ, IMAGE_HW
from evaluation.execution import (DelayedController, chunked_switch_steps, execution_summary, motion_metrics,
                                  summary_lines)
from evaluation.report import write_report
from evaluation.results import (episode_outcome, result_file_name, rollout_line, summary_text, write_result_file,
                                write_result_json)
from evaluation.settings import EvalSettings
from formats.images import resize_images
from policies.chunker import ActionChunker, NonFiniteAction, checked_action
from policies.inputs import history_inputs, image_to_tensor

### Fixed evaluation settings (the original's values)
EVAL_SEED = 1000  # set before the object poses are sampled


class ChunkedController:
    """A torch policy behind the action chunker (policies/chunker.py): one normalised action per
    step, the chunks queried, played and ensembled on the policy's device. A policy with
    `obs_horizon` To > 1 (Diffusion) gets the last To observations stacked on a time axis."""

    def __init__(self, policy, temporal_agg):
        self.policy = policy
        self.chunker = ActionChunker(policy.chunk_size, policy.action_horizon, temporal_agg, policy.obs_horizon)

    def reset(self):
        self.chunker.reset()
        self.policy.reset()

    def close(self):
        """Nothing runs beside the synchronous controller."""

    def __call__(self, qpos, image):
        """qpos (1, S), image (1, K, 3, H, W) of this step -> normalised action (A,) numpy."""
        history = self.chunker.observe((qpos, image))
        chunk = None
        if self.chunker.query_due:
            chunk = self.policy.action_chunk(*history_inputs(history))[0]  # (chunk_size, A)
        return self.chunker.play(chunk).cpu().numpy()


### Loading
def load_stats(config):
    """The checkpoint folder's Normalizer, checked against the policy's sizes (--stats_from: a dataset's)."""
    settings = EvalSettings.of(config)
    return settings.checkpoint.normalizer(settings.policy_class, settings.policy_config, settings.stats_from,
                                          settings.task_name)


def load_policy(config, ckpt_name):
    """Build the configured policy and load the checkpoint into it, on the settings' device."""
    settings = EvalSettings.of(config)
    return settings.checkpoint.policy(settings.policy_class, settings.policy_config, ckpt_name, settings.device,
                                      settings.task_name)


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
    from simulation import make_sim_env
    env = make_sim_env(settings.task_name, camera_names=settings.camera_names, image_size=settings.image_size,
                       shadows=settings.shadows)
    return env, env.task.max_reward


def sample_rollout_poses(task_name, num_rollouts):
    """Object pose of every rollout, drawn in rollout order from the global numpy RNG."""
    from simulation import sample_object_pose
    return [sample_object_pose(task_name, rng=np.random) for _ in range(num_rollouts)]


def get_image(ts, camera_names, size, device):
    """Observation images -> (1, num_cams, 3, H, W) float32 in [0, 1], and the video frame."""
    frames = np.stack([ts.observation['images'][cam] for cam in camera_names])  # (num_cams, h, w, 3)
    frames = resize_images(frames, size)  # (num_cams, H, W, 3); real-robot cameras may differ in size
    video_frame = np.concatenate(list(frames), axis=1)  # (H, W * num_cams, 3)
    return image_to_tensor(frames, device).unsqueeze(0), video_frame


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
            from deploy.runtime import PolicyRunner
            self.runner = PolicyRunner(self.settings.export_dir, self.settings.temporal_agg,
                                       threads=torch.get_num_threads(), engine=self.settings.runtime)
        elif self.settings.execution is not None:
            self.runner = None
            stall_s = None
            if self.settings.real_robot:  # queries in a thread beside the robot's control loop
                from real_robot.settings import POLICY_STALL_S
                stall_s = POLICY_STALL_S
            self.controller = DelayedController(self.policy, self.settings.execution, stall_s)
        else:
            self.runner = None
            self.controller = ChunkedController(self.policy, self.settings.temporal_agg)
        self.onscreen = self.settings.onscreen_render and not self.settings.real_robot
        if self.onscreen:
            from simulation import simulation_of
            self.view_camera = simulation_of(self.settings.task_name).view_camera  # what --onscreen_render shows
        self.sim_failures = ()  # what ends a sim rollout early instead of the evaluation
        if not self.settings.real_robot:  # (a real robot stops on its own)
            from dm_control.rl.control import PhysicsError  # after make_env: sim_env chose the GL backend
            self.sim_failures = (NonFiniteAction, PhysicsError)
        if self.settings.real_robot:  # the robot's control rate (SO arms 30 Hz)
            clock = getattr(self.env, 'clock', None)
            self.video_fps = round(1 / clock.dt) if getattr(clock, 'dt', None) else CONTROL_HZ
        else:  # the sim task's control rate (SO-101 tasks 30 Hz)
            self.video_fps = round(1 / self.env.control_timestep())

    def close(self):
        """The real robot to its safe pose with torque off, and the policy's thread, if any, ended."""
        self.env.close()
        if self.runner is None:
            self.controller.close()

    def policy_inputs(self, ts):
        """-> qpos (1, S) normalised, image (1, num_cams, 3, H, W), video frame (H, W * num_cams, 3)."""
        qpos = self.normalizer.normalize_qpos(np.array(ts.observation['qpos']))
        qpos = torch.from_numpy(qpos).to(self.device).unsqueeze(0)
        image, frame = get_image(ts, self.settings.camera_names, self.settings.image_size, self.device)
        return qpos, image, frame

    def next_action(self, ts):
        """The action for time step ts, in robot units, and the video frame."""
        if self.runner is None:
            qpos, image, frame = self.policy_inputs(ts)
            return self.normalizer.unnormalize_action(self.controller(qpos, image)), frame
        frames = np.stack([ts.observation['images'][cam] for cam in self.settings.camera_names])  # (K, h, w, 3)
        frames = resize_images(frames, self.settings.image_size)  # (K, H, W, 3)
        action = self.runner.act(np.asarray(ts.observation['qpos'], dtype=np.float32), frames)
        return action, np.concatenate(list(frames), axis=1)

    def rollout(self, rollout_id, pose=None, video_path=None):
        """One episode -> dict with rollout_id, episode_return, highest_reward, max_reward, rewards,
        final_qpos, final_env_state (sim), video_path, failure (why a sim rollout ended early, or None)
        and wall_s."""
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
        view = OnscreenView(1 / self.video_fps) if self.onscreen else None
        missed_before = getattr(getattr(self.env, 'clock', None), 'missed', 0)
        loop_start = time.perf_counter()
        try:
            ts, rewards, actions, failure = self._run_episode(ts, video, view)
            loop_s = time.perf_counter() - loop_start
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
                'failure': failure, 'wall_s': time.perf_counter() - start,
                **self._motion(actions, loop_s, missed_before)}

    def _motion(self, actions, loop_s, missed_before):
        """The rollout's motion figures (execution.py) and, asynchronously, what its executor met; on
        a robot also the control rate achieved and the ticks that missed their deadline (the clock's
        count was missed_before when the episode began)."""
        if isinstance(getattr(self, 'controller', None), DelayedController):
            executed = self.controller.result()
            switches = executed['switch_steps']
            clock = getattr(self.env, 'clock', None)
            if getattr(clock, 'realtime', False):
                executed.update(achieved_hz=len(actions) / loop_s if loop_s else 0.0,
                                missed_deadlines=clock.missed - missed_before)
        else:
            executed = {}
            horizon = self.policy.action_horizon if self.policy is not None else self.runner.action_horizon
            switches = chunked_switch_steps(len(actions), horizon, self.settings.temporal_agg)
        return {'motion': motion_metrics(actions, switches), 'executed': executed}

    def _run_episode(self, ts, video, view):
        """Step the policy from time step `ts` for episode_len steps -> (last time step, rewards, the
        actions sent (T, A), failure).
        In simulation a NaN or infinite action, or physics that diverge, end the rollout (failure says
        at which step and why) and the evaluation goes on; the rewards reached before count. The real
        robot's environment holds and stops on such an action itself."""
        rewards, actions = [], []
        with torch.inference_mode():
            for t in range(self.settings.episode_len):
                if view is not None:
                    view.show(self.env.physics.render(*IMAGE_HW, camera_id=self.view_camera))
                try:
                    action, frame = self.next_action(ts)  # (A,) in robot units
                    if video is not None:
                        video.append(frame)
                    ts = self.env.step(action if self.settings.real_robot else checked_action(action, t))
                except self.sim_failures as failure:
                    if isinstance(failure, NonFiniteAction):
                        return ts, rewards, actions, str(failure)
                    return ts, rewards, actions, f'step {t}: the simulation diverged ({failure})'
                rewards.append(ts.reward)
                actions.append(action)
        return ts, rewards, actions, None


def _video_path(settings, rollout_id, save_episode):
    if save_episode and settings.save_video:
        return os.path.join(settings.ckpt_dir, f'video{rollout_id}.mp4')
    return None


_WORKER = {}  # the Evaluator of a worker process


def _init_worker(settings, ckpt_name, num_threads):
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
    initargs = (settings, ckpt_name, num_threads)
    # the forkserver imports the rollout code and the simulation once, not once per worker
    with worker_pool(num_workers, _init_worker, initargs, preload=[__name__, 'sim_env']) as pool:
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
        evaluator.close()


def eval_bc(config, ckpt_name, save_episode=True):
    """Roll the checkpoint out config['num_rollouts'] times -> (success_rate, avg_return).
    Writes result_{checkpoint}.txt (the original's) and report.html (report.py)."""
    settings = EvalSettings.of(config)
    remove_stale_temps(settings.ckpt_dir)  # videos and results of killed runs
    if not settings.real_robot and not settings.shadows:
        print('Rendering without shadows, as the training episodes were (config.json: "shadows": false): '
              "the frames differ from the original's")
    results = []
    for result in rollout_results(settings, ckpt_name, save_episode):
        results.append(result)
        print(rollout_line(result['rollout_id'], result['episode_return'], result['highest_reward'],
                           result['max_reward'], result['failure']))
        if result['video_path'] is not None:
            print(f'Saved video to: {result["video_path"]}')

    max_reward = results[-1]['max_reward']
    episode_returns = [r['episode_return'] for r in results]
    highest_rewards = [r['highest_reward'] for r in results]
    summary = summary_text(highest_rewards, episode_returns, max_reward)
    print(summary)
    result_path = os.path.join(settings.ckpt_dir, result_file_name(ckpt_name))
    write_result_file(result_path, summary, episode_returns, highest_rewards)
    execution = execution_summary(results, settings.execution)
    print(summary_lines(execution, sum(len(r['rewards']) for r in results)))
    write_result_json(os.path.splitext(result_path)[0] + '.json', results, max_reward, execution)
    report = write_report(settings.ckpt_dir, ckpt_name, results, max_reward, settings.checkpoint.config,
                          settings.task_name, execution)
    print(f'Report: {report}')
    return float(np.mean(np.array(highest_rewards) == max_reward)), float(np.mean(episode_returns))


def rollout_results(config, ckpt_name, save_episode=True):
    """Yield the result dict of every rollout, in rollout order, from one or several processes."""
    set_seed(EVAL_SEED)
    settings, num_workers = _checked_settings(EvalSettings.of(config))
    if settings.runtime != 'torch':
        settings = dataclasses.replace(settings, export_dir=exported_policy(settings, ckpt_name))
        policy = normalizer = None
    else:
        policy = load_policy(settings, ckpt_name)  # bad inputs fail here, before any worker starts
        normalizer = load_stats(settings)
        print(f'Loaded: {settings.checkpoint.weights_file(ckpt_name)}')
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


def exported_policy(settings, ckpt_name):
    """The export --runtime onnxruntime / openvino runs: settings.export_dir, or <ckpt_dir>/export_<checkpoint>
    (exported now when absent); it must come from the checkpoint being evaluated."""
    from deploy.runtime import ExportError, file_sha256, read_manifest
    ckpt_path = settings.checkpoint.weights_file(ckpt_name)
    folder = settings.export_dir
    if folder is None:
        folder = os.path.join(settings.ckpt_dir, f'export_{os.path.splitext(os.path.basename(ckpt_path))[0]}')
        if not os.path.isdir(folder):
            from deploy.export import export
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
