"""Deployment: export_policy.py's ONNX and TorchScript exports equal the eager policy, policy_runtime
runs them without torch, evaluation through the runtime plays the same actions, int8 stays close, and
a corrupted or mismatched export or bad input is refused with a message naming what was expected."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import export_policy
from checkpoints.folder import make_run_config, write_config
from cli import run_config
from constants import SIM_TASK_CONFIGS
from deploy import export as deploy_export
from deploy.runtime import ExportError, PolicyRunner
from policies.registry import make_policy
from tests.helpers import (ROOT, TASK, TINY_ACT_CONFIG, TINY_IMAGE_HW, eval_config, start_pose_stats,
                           write_tiny_checkpoint)

CAMERAS = ['top', 'angle']
TINY_DIFFUSION_CONFIG = {'camera_names': CAMERAS, 'num_queries': 4, 'action_horizon': 2, 'down_dims': (16, 32),
                         'num_inference_steps': 2, 'lr': 1e-3, 'pretrained_backbone': False, 'obs_horizon': 2}
CNNMLP_HW = (392, 392)  # the smallest square the CNNMLP head accepts
TOLERANCE = 1e-5


def tiny_run(folder, policy_class, policy_config, image_hw=TINY_IMAGE_HW, seed=0):
    """A training folder: an untrained policy (weights drawn from `seed`, whichever tests ran before),
    statistics near the start pose, and config.json."""
    stats = start_pose_stats([0, -0.96, 1.16, 0, -0.3, 0], 1.0, 0.02)
    stats.update(action_min=stats['action_mean'] - 0.5, action_max=stats['action_mean'] + 0.5)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        write_tiny_checkpoint(folder, policy_config, stats, policy_class)
    cfg = make_policy(policy_class, policy_config, load_pretrained=False).cfg
    write_config(folder, make_run_config(policy_class, cfg, TASK, image_hw))
    return str(folder)


def export(ckpt_dir, out, *flags):
    export_policy.main(['--ckpt_dir', ckpt_dir, '--out', str(out), *flags])
    return str(out)


@pytest.fixture(scope='module')
def act_export(tmp_path_factory):
    folder = tmp_path_factory.mktemp('act')
    ckpt_dir = tiny_run(folder / 'ckpt', 'ACT', dict(TINY_ACT_CONFIG, camera_names=CAMERAS))
    return ckpt_dir, export(ckpt_dir, folder / 'onnx', '--format', 'onnx')


def eager_and_exported(ckpt_dir, folder, obs_horizon=None, engine='onnxruntime', **overrides):
    """(eager, exported) raw action chunks for batches 1 and 3 of data-like inputs; overrides: policy
    settings the export was given beside config.json's."""
    from evaluation.rollout import load_policy, load_stats
    saved = json.load(open(os.path.join(ckpt_dir, 'config.json')))['policy_config']
    config = eval_config(ckpt_dir, {**saved, **overrides},
                         policy_class=json.load(open(os.path.join(ckpt_dir, 'config.json')))['policy_class'],
                         camera_names=CAMERAS)
    policy, normalizer = load_policy(config, 'policy_best.ckpt'), load_stats(config)
    runner = PolicyRunner(folder, engine=engine)
    cfg = dict(policy.cfg, image_size=runner.image_size, camera_names=CAMERAS)
    pairs = []
    for batch in (1, 3):
        qpos, images = (x.numpy() for x in deploy_export.example_observation(cfg, batch, obs_horizon))
        noise = deploy_export.diffusion_noise(policy, batch, seed=7) if obs_horizon else None
        exported = runner.query(qpos, images, noise=noise)
        eager = deploy_export.eager_chunks(policy, normalizer, qpos, images, seed=7)
        assert exported.shape == eager.shape == (batch, policy.chunk_size, 14)
        pairs.append((eager, exported))
    return pairs


def test_act_onnx_equals_eager_over_batches_and_two_cameras(act_export):
    ckpt_dir, folder = act_export
    manifest = json.load(open(os.path.join(folder, 'policy.json')))
    assert manifest['camera_names'] == CAMERAS and manifest['image_size'] == list(TINY_IMAGE_HW)
    assert manifest['chunk_size'] == 5 and manifest['control_hz'] == 50 and manifest['policy_class'] == 'ACT'
    for eager, exported in eager_and_exported(ckpt_dir, folder):
        np.testing.assert_allclose(exported, eager, atol=TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample'])
def test_diffusion_onnx_with_an_observation_history_equals_eager(tmp_path, prediction_type):
    ckpt_dir = tiny_run(tmp_path / 'ckpt', 'Diffusion', dict(TINY_DIFFUSION_CONFIG, prediction_type=prediction_type))
    folder = export(ckpt_dir, tmp_path / 'onnx')
    assert json.load(open(os.path.join(folder, 'policy.json')))['diffusion']['prediction_type'] == prediction_type
    assert sorted(os.listdir(folder)) == ['denoiser.onnx', 'encoder.onnx', 'policy.json']
    for eager, exported in eager_and_exported(ckpt_dir, folder, obs_horizon=2):
        np.testing.assert_allclose(exported, eager, atol=TOLERANCE)


@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample'])
def test_runtime_ddim_step_equals_diffusers(prediction_type):
    import torch

    from deploy.samplers import DDIM
    from policies.diffusion import DEFAULTS, make_noise_scheduler
    scheduler = make_noise_scheduler('ddim', {**DEFAULTS, 'prediction_type': prediction_type})
    scheduler.set_timesteps(10)
    ddim = DDIM({'num_train_timesteps': 50, 'prediction_type': prediction_type,
                 'timesteps': scheduler.timesteps.tolist(), 'alphas_cumprod': scheduler.alphas_cumprod.tolist(),
                 'final_alpha_cumprod': float(scheduler.final_alpha_cumprod)})
    rng = np.random.default_rng(0)
    for t in ddim.timesteps:
        prediction, sample = (rng.standard_normal((2, 4, 14)).astype(np.float32) for _ in range(2))
        expected = scheduler.step(torch.from_numpy(prediction), t, torch.from_numpy(sample)).prev_sample.numpy()
        np.testing.assert_allclose(ddim.step(prediction, t, sample), expected, atol=1e-5)


def diffusers_sampling(name, steps, prediction_type, noise, denoise):
    """The policy's diffusers scheduler turning `noise` into a chunk with `denoise` (numpy in and out)."""
    import torch

    from policies.diffusion import DEFAULTS, make_noise_scheduler, set_sampling_steps
    scheduler = make_noise_scheduler(name, {**DEFAULTS, 'prediction_type': prediction_type})
    set_sampling_steps(scheduler, steps)
    sample = torch.from_numpy(noise)
    for t in scheduler.timesteps:
        prediction = torch.from_numpy(denoise(sample.numpy(), int(t)))
        sample = scheduler.step(prediction, t, sample).prev_sample
    return sample.numpy(), scheduler


@pytest.mark.parametrize('steps', [1, 2, 5, 10])
@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample'])
def test_runtime_dpmsolver_equals_diffusers(prediction_type, steps):
    from deploy.samplers import make_sampler
    rng = np.random.default_rng(steps)
    weights = rng.standard_normal((14, 14)).astype(np.float32) * 0.5

    def denoise(sample, t):  # a denoiser that depends on the sample and the step, as a network does
        return np.tanh(sample @ weights + t / 50).astype(np.float32)

    noise = rng.standard_normal((2, 4, 14)).astype(np.float32)
    expected, scheduler = diffusers_sampling('dpmsolver', steps, prediction_type, noise, denoise)
    sampler = make_sampler({'sampler': 'dpmsolver', 'prediction_type': prediction_type,
                            'timesteps': scheduler.timesteps.tolist(), 'sigmas': scheduler.sigmas.tolist()})
    np.testing.assert_allclose(sampler.sample(noise, denoise), expected, atol=1e-5)
    assert np.abs(expected).max() <= 1.0  # the last step lands on the clipped clean chunk


@pytest.mark.parametrize('constants, message', [
    ({'sampler': 'euler'}, r"diffusion.sampler 'euler': expected one of ddim, dpmsolver"),
    ({'sampler': 'dpmsolver', 'timesteps': [5, 0]}, r'diffusion lacks sigmas \(the dpmsolver'),
    ({'sampler': 'dpmsolver', 'timesteps': [5, 0], 'sigmas': [1.0, 0.0]}, r'sigmas has 2 values: expected .* \(3\)'),
    ({'timesteps': [5, 0]}, r'lacks num_train_timesteps, alphas_cumprod, final_alpha_cumprod \(the ddim'),
])
def test_bad_sampler_constants_are_named(constants, message):
    from deploy.samplers import make_sampler
    with pytest.raises(ValueError, match=message):
        make_sampler(constants)


@pytest.mark.slow  # the runtime's DPM-Solver++ against diffusers' and a Diffusion export run in the default tests
def test_a_ddim_trained_policy_exports_sampling_with_dpmsolver(tmp_path):
    ckpt_dir = tiny_run(tmp_path / 'ckpt', 'Diffusion', dict(TINY_DIFFUSION_CONFIG, prediction_type='sample'))
    folder = export(ckpt_dir, tmp_path / 'onnx', '--scheduler', 'dpmsolver', '--num_inference_steps', '5')
    constants = json.load(open(os.path.join(folder, 'policy.json')))['diffusion']
    assert constants['sampler'] == 'dpmsolver' and len(constants['timesteps']) == 5 and constants['sigmas'][-1] == 0
    pairs = eager_and_exported(ckpt_dir, folder, obs_horizon=2, scheduler='dpmsolver', num_inference_steps=5)
    for eager, exported in pairs:
        np.testing.assert_allclose(exported, eager, atol=TOLERANCE)


def test_a_sampler_the_runtime_lacks_is_refused_before_any_file(tmp_path, capsys):
    ckpt_dir = tiny_run(tmp_path / 'ckpt', 'Diffusion', TINY_DIFFUSION_CONFIG)
    with pytest.raises(SystemExit):
        export(ckpt_dir, tmp_path / 'onnx', '--scheduler', 'ddpm')
    assert '--scheduler ddpm; the runtime samples with ddim or dpmsolver' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['ckpt']


def test_the_realtime_runner_plays_the_export_without_waiting(act_export):
    from deploy import export as deploy_export
    _, folder = act_export
    runner = PolicyRunner(folder)
    live = runner.realtime(strategy='replace', threshold=2)
    cfg = {'camera_names': CAMERAS, 'image_size': runner.image_size, 'state_dim': 14}
    qpos, images = (x.numpy() for x in deploy_export.example_observation(cfg, 1, None))
    try:
        live.reset()
        actions = [live.act(qpos[0], images[0]) for _ in range(12)]
    finally:
        live.close()
    first_chunk = runner.query(qpos, images)[0]  # (5, 14): the first chunk is awaited, so step 0 plays its first action
    np.testing.assert_allclose(actions[0], first_chunk[0], atol=1e-6)
    assert all(a.shape == (14,) and np.isfinite(a).all() for a in actions) and live.executor.t == 12
    # a second query went out beside the steps (done or still in flight: the loop did not wait for it)
    assert len(live.threaded.delays) >= 2 or live.threaded.future is not None


def test_act_onnx_on_openvino_equals_eager(act_export):
    for eager, exported in eager_and_exported(*act_export, engine='openvino'):
        np.testing.assert_allclose(exported, eager, atol=TOLERANCE)


def test_an_export_takes_its_settings_from_config_json_without_a_command_line(act_export, monkeypatch):
    ckpt_dir, _ = act_export
    parsed = run_config.export_settings(ckpt_dir, 'policy_best.ckpt', ['--task_name', TASK])  # through the flags

    def no_command_line(*args, **kwargs):
        raise AssertionError('a command line was built')
    monkeypatch.setattr(run_config, 'build_parser', no_command_line)
    saved = run_config.export_settings(ckpt_dir, 'policy_best.ckpt', [])
    for name in ('task_name', 'policy_class', 'policy_config', 'camera_names', 'image_size', 'shadows', 'episode_len',
                 'real_robot', 'ckpt_dir'):
        assert getattr(saved, name) == getattr(parsed, name), name


def test_a_registered_engine_runs_the_export_in_the_runtime_and_in_evaluation(act_export, monkeypatch, capsys):
    """An engine added with deploy.engines.register_engine: onnxruntime behind a counter."""
    from deploy import engines
    calls = []

    def counting_graph(path, threads):
        graph = engines.onnxruntime_graph(path, threads)
        return engines.Graph(lambda feeds: calls.append(path) or graph.run(feeds), graph.inputs)
    monkeypatch.setattr(engines, 'ENGINES', dict(engines.ENGINES))
    engines.register_engine('counting', counting_graph)
    for eager, exported in eager_and_exported(*act_export, engine='counting'):
        np.testing.assert_allclose(exported, eager, atol=TOLERANCE)
    assert len(calls) >= 2  # the load's check of the graph, then a query per batch
    import imitate_episodes
    ckpt_dir, folder = act_export
    args = imitate_episodes.build_parser().parse_args(['--eval', '--ckpt_dir', ckpt_dir, '--runtime', 'counting',
                                                       '--export_dir', str(folder), '--num_rollouts', '1',
                                                       '--no_video', '--device', 'cpu'])
    with pytest.raises(ValueError, match="engine 'nope': expected one of onnxruntime, openvino, counting"):
        PolicyRunner(folder, engine='nope')
    monkeypatch.setitem(SIM_TASK_CONFIGS[TASK], 'episode_len', 3)
    imitate_episodes.main(vars(args))
    runs = len(calls)
    assert runs > 3 and 'success_rate=' in capsys.readouterr().out


@pytest.mark.slow
def test_act_torchscript_equals_eager(act_export, tmp_path):
    ckpt_dir, _ = act_export
    folder = export(ckpt_dir, tmp_path / 'ts', '--format', 'torchscript')
    for eager, exported in eager_and_exported(ckpt_dir, folder):
        np.testing.assert_allclose(exported, eager, atol=TOLERANCE)


@pytest.mark.slow
def test_cnnmlp_onnx_equals_eager(tmp_path):
    config = {'camera_names': CAMERAS, 'lr': 1e-4, 'backbone': 'resnet18', 'pretrained_backbone': False,
              'image_size': CNNMLP_HW, 'state_dim': 14, 'action_dim': 14}
    ckpt_dir = tiny_run(tmp_path / 'ckpt', 'CNNMLP', config, CNNMLP_HW)
    for eager, exported in eager_and_exported(ckpt_dir, export(ckpt_dir, tmp_path / 'onnx')):
        np.testing.assert_allclose(exported, eager, atol=TOLERANCE)


@pytest.fixture(scope='module')
def calibration_episodes(tmp_path_factory):
    """Episodes with the export tests' two cameras, for --quantize int8 to calibrate on."""
    from tests.helpers import write_tiny_episode
    folder = tmp_path_factory.mktemp('episodes')
    for i in range(3):
        write_tiny_episode(str(folder / f'episode_{i}.hdf5'), camera_names=CAMERAS, seed=i)
    return str(folder)


def int8_inputs(path):
    """The operators of an ONNX graph whose data and weight inputs both come out of DequantizeLinear."""
    import onnx
    nodes = onnx.load(path).graph.node
    dequantized = {n.output[0] for n in nodes if n.op_type == 'DequantizeLinear'}
    return {n.op_type for n in nodes if n.op_type in ('Conv', 'MatMul', 'Gemm') and all(i in dequantized
                                                                                          for i in n.input[:2])}


def test_static_int8_calibrates_the_whole_graph_and_stays_close(act_export, calibration_episodes, tmp_path, capsys):
    ckpt_dir, fp32 = act_export
    folder = export(ckpt_dir, tmp_path / 'int8', '--quantize', 'int8', '--calibration', '60',
                    '--dataset_dir', calibration_episodes)
    assert 'max action difference to the eager policy over 8 recorded observations' in capsys.readouterr().out
    assert json.load(open(os.path.join(folder, 'policy.json')))['quantize'] == 'int8'
    assert {'Conv', 'MatMul'} <= int8_inputs(os.path.join(folder, 'policy.onnx'))  # the trunk and the transformer
    for eager, exported in eager_and_exported(ckpt_dir, folder):
        assert np.abs(exported - eager).max() < 0.05  # actions spread about 0.1 (action_std 0.02)


def test_static_int8_needs_episodes_to_calibrate_on(act_export, tmp_path, capsys):
    with pytest.raises(SystemExit):
        export(act_export[0], tmp_path / 'int8', '--quantize', 'int8')
    assert 'config.json names no training episodes: give --dataset_dir' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'int8')


def test_an_int8_export_too_far_from_eager_is_not_written(act_export, calibration_episodes, tmp_path, monkeypatch,
                                                         capsys):
    monkeypatch.setattr(deploy_export, 'INT8_TOLERANCE', 0.0)
    with pytest.raises(SystemExit):
        export(act_export[0], tmp_path / 'int8', '--quantize', 'int8', '--calibration', '4',
               '--dataset_dir', calibration_episodes)
    assert re.search(r'differs from the eager policy by [0-9.]+ \(normalised action units\) .* not written',
                     capsys.readouterr().err)
    assert not os.path.exists(tmp_path / 'int8') and not os.path.exists(tmp_path / 'int8.partial')


def test_a_nan_difference_never_passes_the_int8_check(act_export, calibration_episodes, tmp_path, monkeypatch,
                                                      capsys):
    monkeypatch.setattr(deploy_export, 'recorded_difference', lambda *args: float('nan'))
    with pytest.raises(SystemExit):
        export(act_export[0], tmp_path / 'int8', '--quantize', 'int8', '--calibration', '4',
               '--dataset_dir', calibration_episodes)
    assert 'differs from the eager policy by nan' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'int8') and not os.path.exists(tmp_path / 'int8.partial')


def test_int8_calibration_refuses_nan_observations_and_draws_no_more_than_the_episodes_hold(
        act_export, calibration_episodes, tmp_path, capsys):
    import h5py
    from deploy.quantize import calibration_observations
    from formats.datasets import open_dataset
    episodes = open_dataset(calibration_episodes)
    steps = sum(len(episodes.low_dim(i)[0]) for i in range(episodes.num_episodes))
    drawn = calibration_observations(episodes, CAMERAS, (12, 16), 100_000)
    assert len(drawn) == steps and f'--calibration 100000: the episodes hold {steps} steps; calibrating on {steps}' \
        in capsys.readouterr().out
    broken = tmp_path / 'broken'
    shutil.copytree(calibration_episodes, broken)
    with h5py.File(broken / 'episode_1.hdf5', 'r+') as root:
        root['/observations/qpos'][3, 2] = np.nan
    with pytest.raises(SystemExit):
        export(act_export[0], tmp_path / 'int8', '--quantize', 'int8', '--calibration', '20', '--dataset_dir',
               str(broken))
    assert re.search(r'episode_1.hdf5: qpos\[3, 2\] is nan .*; int8 calibration needs finite observations',
                     capsys.readouterr().err)
    assert not os.path.exists(tmp_path / 'int8')


@pytest.mark.slow
def test_static_int8_of_a_diffusion_policy_calibrates_the_encoder_and_the_denoiser(calibration_episodes, tmp_path):
    ckpt_dir = tiny_run(tmp_path / 'ckpt', 'Diffusion', TINY_DIFFUSION_CONFIG)
    folder = export(ckpt_dir, tmp_path / 'int8', '--quantize', 'int8', '--calibration', '6',
                    '--dataset_dir', calibration_episodes)
    assert 'Conv' in int8_inputs(os.path.join(folder, 'encoder.onnx'))
    assert 'Conv' in int8_inputs(os.path.join(folder, 'denoiser.onnx'))
    for eager, exported in eager_and_exported(ckpt_dir, folder, obs_horizon=2):
        # actions within +-0.5 of the start pose (the min-max range); random inputs leave the calibrated ranges
        assert np.abs(exported - eager).max() < 0.25


@pytest.mark.slow
def test_dynamic_int8_export_runs_and_stays_close(act_export, tmp_path):
    ckpt_dir, fp32 = act_export
    folder = export(ckpt_dir, tmp_path / 'int8', '--quantize', 'int8-dynamic')
    assert json.load(open(os.path.join(folder, 'policy.json')))['quantize'] == 'int8-dynamic'
    assert os.path.getsize(os.path.join(folder, 'policy.onnx')) < os.path.getsize(os.path.join(fp32, 'policy.onnx'))
    for eager, exported in eager_and_exported(ckpt_dir, folder):
        # the tiny model's actions spread about 0.1 around the start pose (action_std 0.02)
        assert np.abs(exported - eager).max() < 0.05


def test_calibration_observations_follow_the_observation_horizon(calibration_episodes):
    from deploy.quantize import calibration_observations
    from formats.datasets import open_dataset
    episodes = open_dataset(calibration_episodes)
    single = calibration_observations(episodes, CAMERAS, (12, 16), 5)
    assert len(single) == 5 and single[0][0].shape == (14,) and single[0][1].shape == (2, 12, 16, 3)
    stacked = calibration_observations(episodes, CAMERAS, (12, 16), 4, obs_horizon=2)
    assert stacked[0][0].shape == (2, 14) and stacked[0][1].shape == (2, 2, 12, 16, 3)
    assert stacked[0][1].dtype == np.uint8


def test_the_runtime_never_returns_a_nan_action(act_export):
    from policy_runtime import PolicyRunner
    runner = PolicyRunner(act_export[1])
    images = np.zeros((2, 24, 32, 3), np.uint8)
    assert np.isfinite(runner.act(np.zeros(14, np.float32), images)).all()
    runner.query = lambda qpos, images: np.full((1, runner.chunk_size, 14), np.nan, np.float32)
    runner.reset()
    with pytest.raises(ValueError, match=r"step 0: the policy's action holds non-finite values \(nan at index 0"):
        runner.act(np.zeros(14, np.float32), images)


def test_the_runtime_imports_and_runs_without_torch(act_export):
    _, folder = act_export
    script = ('import sys; sys.modules["torch"] = None\n'
              'import numpy as np\n'
              'from policy_runtime import PolicyRunner\n'
              f'runner = PolicyRunner({folder!r}, temporal_agg=True)\n'
              'images = np.zeros((2, 24, 32, 3), np.uint8)\n'
              'actions = [runner.act(np.zeros(14, np.float32), images) for _ in range(3)]\n'
              'assert "torch" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}\n'
              'print(np.shape(actions))\n')
    done = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '(3, 14)'


def rollout_steps(evaluator):
    """One rollout of `evaluator`: the time steps the policy saw and the actions it sent, in order."""
    step, seen, played = evaluator.env.step, [], []

    def recorded(action):
        played.append(np.array(action))
        seen.append(ts := step(action))
        return ts
    reset = evaluator.env.reset
    evaluator.env.reset = lambda: seen.append(ts := reset()) or ts
    evaluator.env.step = recorded
    evaluator.rollout(0)
    return seen[:-1], np.array(played)


@pytest.mark.parametrize('temporal_agg', [True, pytest.param(False, marks=pytest.mark.slow)])
def test_evaluation_through_the_runtime_plays_the_eager_actions(act_export, temporal_agg):
    """The same observations through the eager controller and through the runtime give the same actions."""
    import dataclasses

    from evaluation.rollout import Evaluator, load_policy, load_stats
    from evaluation.settings import EvalSettings
    ckpt_dir, folder = act_export
    config = eval_config(ckpt_dir, dict(TINY_ACT_CONFIG, camera_names=CAMERAS), camera_names=CAMERAS,
                         temporal_agg=temporal_agg, episode_len=12)
    settings = EvalSettings.of(config)
    timesteps, eager = rollout_steps(Evaluator(settings, load_policy(settings, 'policy_best.ckpt'),
                                               load_stats(settings)))
    runtime = Evaluator(dataclasses.replace(settings, runtime='onnxruntime', export_dir=folder), None, None)
    runtime.runner.reset()
    exported = np.array([runtime.next_action(ts)[0] for ts in timesteps])
    assert eager.shape == exported.shape == (12, 14)
    np.testing.assert_allclose(exported, eager, atol=TOLERANCE)


def test_an_act_export_plays_the_actions_per_chunk_it_was_given(act_export, tmp_path):
    ckpt_dir, whole = act_export
    assert PolicyRunner(whole).action_horizon == TINY_ACT_CONFIG['num_queries']  # the whole chunk
    runner = PolicyRunner(export(ckpt_dir, tmp_path / 'h2', '--format', 'onnx', '--action_horizon', '2'))
    assert runner.action_horizon == 2 and runner.chunker.query_frequency == 2


def evaluate_with_onnxruntime(ckpt_dir, *flags):
    """imitate_episodes.py --eval --runtime onnxruntime on ckpt_dir: one rollout of 4 steps."""
    import imitate_episodes
    from evaluation.rollout import eval_bc
    args = vars(imitate_episodes.build_parser().parse_args([
        '--eval', '--ckpt_dir', ckpt_dir, '--runtime', 'onnxruntime', '--num_rollouts', '1', '--no_video',
        '--image_size', *map(str, TINY_IMAGE_HW), *flags]))
    config = dict(run_config.eval_config(run_config.with_default_folder(args), 'cpu'), episode_len=4)
    return eval_bc(config, 'policy_best.ckpt', save_episode=False)


def test_imitate_episodes_evaluates_an_export_and_checks_its_source(act_export, tmp_path):
    ckpt_dir, folder = act_export
    evaluate_with_onnxruntime(ckpt_dir, '--export_dir', folder)
    assert os.path.isfile(os.path.join(ckpt_dir, 'result_policy_best.txt'))
    other = tiny_run(tmp_path / 'other', 'ACT', dict(TINY_ACT_CONFIG, camera_names=CAMERAS), seed=1)
    with pytest.raises(ExportError, match='exported from another checkpoint'):
        evaluate_with_onnxruntime(other, '--export_dir', folder)


@pytest.mark.slow
def test_imitate_episodes_exports_next_to_the_checkpoint(act_export, tmp_path):
    run = str(tmp_path / 'run')
    shutil.copytree(act_export[0], run)
    evaluate_with_onnxruntime(run)
    assert os.path.isfile(os.path.join(run, 'export_policy_best', 'policy.onnx'))


def test_a_corrupted_or_mismatched_export_is_refused(act_export, tmp_path):
    _, folder = act_export
    broken = str(tmp_path / 'broken')
    shutil.copytree(folder, broken)
    with open(os.path.join(broken, 'policy.onnx'), 'r+b') as f:
        f.seek(-100, os.SEEK_END)
        f.write(b'\x00' * 10)
    with pytest.raises(ExportError, match=r'policy\.onnx: does not match .*policy\.json.*corrupted'):
        PolicyRunner(broken)
    mismatched = str(tmp_path / 'mismatched')
    shutil.copytree(folder, mismatched)
    manifest = json.load(open(os.path.join(mismatched, 'policy.json')))
    manifest['camera_names'] = ['top']
    json.dump(manifest, open(os.path.join(mismatched, 'policy.json'), 'w'))
    with pytest.raises(ExportError, match=r"'images' has shape .* but policy\.json describes \['B', 1, 24, 32, 3\]"):
        PolicyRunner(mismatched)
    with pytest.raises(ExportError, match=r'policy\.json: not found; export the policy first'):
        PolicyRunner(str(tmp_path))


def test_bad_inputs_name_the_expected_shapes(act_export):
    runner = PolicyRunner(act_export[1])
    images = np.zeros((1, 2, 24, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r'qpos of shape \(1, 10\).*\(1, 14\)'):
        runner.query(np.zeros((1, 10)), images)
    with pytest.raises(ValueError, match=r'expects uint8 \(1, 2, 24, 32, 3\).*2 cameras \[top, angle\].*resize'):
        runner.query(np.zeros((1, 14)), np.zeros((1, 2, 48, 64, 3), np.uint8))
    with pytest.raises(ValueError, match=r'2 cameras'):
        runner.query(np.zeros((1, 14)), images[:, :1])
    with pytest.raises(ValueError, match='dtype float64'):
        runner.query(np.zeros((1, 14)), images.astype(float))


def test_export_without_statistics_names_the_file(act_export, tmp_path, capsys):
    ckpt_dir, _ = act_export
    run = str(tmp_path / 'run')
    shutil.copytree(ckpt_dir, run)
    os.remove(os.path.join(run, 'dataset_stats.pkl'))
    with pytest.raises(SystemExit):
        export(run, tmp_path / 'out')
    assert 'dataset_stats.pkl' in capsys.readouterr().err and not os.path.exists(tmp_path / 'out')


def test_a_policy_with_nan_actions_is_not_exported(act_export, tmp_path, capsys):
    ckpt_dir, _ = act_export
    run = str(tmp_path / 'run')
    shutil.copytree(ckpt_dir, run)
    state = torch.load(os.path.join(run, 'policy_best.ckpt'))
    state['model.action_head.bias'].fill_(float('nan'))
    torch.save(state, os.path.join(run, 'policy_best.ckpt'))
    with pytest.raises(SystemExit):
        export(run, tmp_path / 'out')
    assert 'the policy gives non-finite actions' in capsys.readouterr().err and not os.path.exists(tmp_path / 'out')


def test_an_export_never_goes_into_a_training_folder_and_overwrites_only_an_export(act_export, tmp_path, capsys):
    ckpt_dir, folder = act_export
    before = sorted(os.listdir(ckpt_dir))
    for out, flags, message in ((ckpt_dir, ['--overwrite'], 'holds the checkpoint folder'),
                                (os.path.dirname(ckpt_dir), ['--overwrite'], 'holds the checkpoint folder'),
                                (str(tmp_path / 'notes'), ['--overwrite'], r'is not an export \(no policy.json\)'),
                                (folder, [], 'holds an export already: choose another --out, or pass --overwrite')):
        if out.endswith('notes'):
            os.makedirs(out)
            open(os.path.join(out, 'notes.txt'), 'w').close()
        with pytest.raises(SystemExit):
            export(ckpt_dir, out, *flags)
        assert re.search(message, capsys.readouterr().err), message
    assert sorted(os.listdir(ckpt_dir)) == before and os.listdir(tmp_path / 'notes') == ['notes.txt']
    export(ckpt_dir, folder, '--overwrite')  # an export is replaced
    assert os.path.isfile(os.path.join(folder, 'policy.json'))


def test_a_folder_copied_into_out_while_an_export_runs_is_never_removed(act_export, tmp_path, monkeypatch, capsys):
    ckpt_dir, earlier = act_export
    checks = deploy_export.compare_with_eager
    for out, flags in ((tmp_path / 'new', []), (tmp_path / 'earlier', ['--overwrite'])):
        if flags:  # an earlier export, replaced by a training folder while the new one is checked
            shutil.copytree(earlier, out)

        def racing(*args, out=out):  # `cp -r <a training folder> OUT` while OUT.partial exists
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(ckpt_dir, out)
            return checks(*args)
        monkeypatch.setattr(deploy_export, 'compare_with_eager', racing)
        with pytest.raises(SystemExit):
            export(ckpt_dir, out, *flags)
        assert f'{out} was filled while the result was built' in capsys.readouterr().err
        assert sorted(os.listdir(out)) == sorted(os.listdir(ckpt_dir))  # the training folder, whole
        assert not os.path.exists(f'{out}.partial')


def test_an_export_naming_a_model_outside_its_folder_is_refused(act_export, tmp_path):
    from policy_runtime import ExportError, PolicyRunner
    _, folder = act_export
    moved = str(tmp_path / 'export')
    shutil.copytree(folder, moved)
    manifest = json.load(open(os.path.join(moved, 'policy.json')))
    shutil.copy(os.path.join(moved, 'policy.onnx'), tmp_path / 'x.onnx')
    manifest['files']['policy']['name'] = '../x.onnx'
    json.dump(manifest, open(os.path.join(moved, 'policy.json'), 'w'))
    with pytest.raises(ExportError, match=r"policy.json: files.policy.name '../x.onnx' points outside"):
        PolicyRunner(moved)


@pytest.mark.parametrize('key, value, message', [
    ('image_size', [-24, 32], r'image_size \[-24, 32\] is not two positive integers'),
    ('chunk_size', '5', r"chunk_size '5' is not a positive integer"),
    ('camera_names', 'top', r"camera_names 'top' is not a list of camera names"),
    ('files', ['policy.onnx'], r'files is not an object'),
])
def test_a_policy_json_of_wrong_types_is_named(act_export, tmp_path, key, value, message):
    from policy_runtime import ExportError, PolicyRunner
    moved = str(tmp_path / 'export')
    shutil.copytree(act_export[1], moved)
    manifest = json.load(open(os.path.join(moved, 'policy.json')))
    json.dump({**manifest, key: value}, open(os.path.join(moved, 'policy.json'), 'w'))
    with pytest.raises(ExportError, match=r'policy.json: ' + message):
        PolicyRunner(moved)


@pytest.mark.parametrize('change, message', [
    ({'chunk_size': 50}, r'policy.onnx: returns chunks of 5 actions of 14 values, but policy.json says 50 of 14'),
    ({'action_dim': 3}, r'policy.onnx: returns chunks of 5 actions of 14 values, but policy.json says 5 of 3'),
    ({'action_horizon': 500}, r'policy.json: action_horizon 500 is more than chunk_size 5'),
    ({'format': 'torchscript'}, r"policy.json: format 'torchscript' but policy.onnx is not a .pt file"),
    ({'format': 'tflite'}, r"policy.json: format 'tflite' is not one of onnx, torchscript"),
    ({'files': {}}, r'policy.json: files is not an object'),
    ({'files': 'encoder'}, r"policy.json: files has the graphs \['encoder'\]; a ACT export has \['policy'\]"),
])
def test_a_policy_json_that_disagrees_with_its_graph_is_refused_at_load(act_export, tmp_path, change, message):
    from policy_runtime import ExportError, PolicyRunner
    moved = str(tmp_path / 'export')
    shutil.copytree(act_export[1], moved)
    manifest = json.load(open(os.path.join(moved, 'policy.json')))
    if change.get('files') == 'encoder':
        change = {'files': {'encoder': manifest['files']['policy']}}
    json.dump({**manifest, **change}, open(os.path.join(moved, 'policy.json'), 'w'))
    with pytest.raises(ExportError, match=message):
        PolicyRunner(moved)


def test_a_graph_its_engine_cannot_load_is_named(act_export, tmp_path):
    from policy_runtime import ExportError, PolicyRunner
    moved = str(tmp_path / 'export')
    shutil.copytree(act_export[1], moved)
    manifest = json.load(open(os.path.join(moved, 'policy.json')))
    with open(os.path.join(moved, 'policy.pt'), 'wb') as f:  # an ONNX file under a TorchScript name
        f.write(open(os.path.join(moved, 'policy.onnx'), 'rb').read())
    manifest['files']['policy']['name'] = 'policy.pt'
    json.dump({**manifest, 'format': 'torchscript'}, open(os.path.join(moved, 'policy.json'), 'w'))
    with pytest.raises(ExportError, match=r'policy.pt: cannot be loaded as the torchscript graph policy.json says it '
                                          r'is \(.*\); export the policy again'):
        PolicyRunner(moved)


def test_export_help_works():
    done = subprocess.run([sys.executable, 'export_policy.py', '--help'], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and '--quantize' in done.stdout


def test_the_int8_success_bench_compares_the_two_exports(act_export, calibration_episodes, tmp_path, monkeypatch,
                                                         capsys):
    from bench import int8_success

    def in_process(command, cwd, stdout):  # export_policy.py's command run here, not in a new interpreter
        assert command[1] == 'export_policy.py'
        export_policy.main(command[2:])
        return subprocess.CompletedProcess(command, 0)
    monkeypatch.setattr(int8_success.subprocess, 'run', in_process)
    ckpt_dir, fp32 = act_export
    out = tmp_path / 'bench'
    shutil.copytree(fp32, out / 'export_fp32')  # exported before: kept
    args = int8_success.parse_args(['--ckpt_dir', ckpt_dir, '--ckpt', 'policy_best.ckpt', '--dataset_dir',
                                    calibration_episodes, '--calibration', '6', '--out', str(out)])
    folders = {name: int8_success.export_folder(args, name) for name in int8_success.EXPORTS}
    assert [json.load(open(os.path.join(folders[name], 'policy.json')))['quantize'] for name in ('fp32', 'int8')] \
        == [None, 'int8']
    recorded = int8_success.recorded_difference(args, folders)
    assert recorded['episode'] == 'episode_0.hdf5'
    assert 0 < recorded['max_first_action_difference'] <= recorded['max_chunk_difference'] < 0.05
    for name, rate in (('fp32', 0.5), ('int8', 0.46)):  # evaluated before: read back, nothing run
        folder = out / f'onnxruntime_{name}'
        folder.mkdir()
        (folder / 'result_policy_best.json').write_text(json.dumps({'success_rate': rate, 'stages': {'4': 1}}))
    capsys.readouterr()
    int8_success.main(args)
    report = json.loads(capsys.readouterr().out)
    assert report['success_difference_points'] == -4.0
    assert report['cases']['int8'] == {'success_rate': 0.46, 'stages': {'4': 1}}
