"""The export behind export_policy.py (its docstring tells the files and the flags).

Each exported graph is the eager policy wrapped with its statistics (`DETRGraph`, for Diffusion
`DiffusionEncoderGraph` and `DenoiserGraph`): raw qpos and uint8 images in, actions in robot units
out, with a free batch size. `export` writes the graphs and policy.json into a partial folder,
checks them against the eager policy over CHECK_BATCHES, and only then puts the folder in place.
"""
import contextlib
import io
import json
import logging
import os
import warnings

import numpy as np
import torch
from torch import nn

from common.files import atomic_write, space_checked
from common.folders import FolderLock, drop_staging, make_staging, publish_staging
from constants import CONTROL_HZ, PROJECT_VERSION
from deploy.runtime import FILE_TYPES, FORMAT_VERSION, MANIFEST, SAMPLER, PolicyRunner, file_sha256
from deploy.samplers import SAMPLERS
from formats.normalize import standardize, unstandardize
from policies.diffusion import set_sampling_steps
from policies.inputs import images_to_unit
from tasks import control_hz, get_task_config

EXAMPLE_BATCH = 2  # batch size of the example inputs the graph is traced with (any size runs)
CHECK_BATCHES = (1, 3)  # batch sizes compared against the eager policy after export
RECORDED_CHECKS = 8  # recorded observations an int8 export is compared with the eager policy on
FP32_TOLERANCE = 1e-4  # largest action difference to eager fp32 an fp32 export may have
INT8_TOLERANCE = 1.0  # largest action difference to eager of a static int8 export over recorded
# observations, in the policy's normalised action units (ACT, CNNMLP: standard deviations; Diffusion:
# half the action's range), about what a Diffusion policy's own next noise draw moves its actions by


### graphs: raw inputs in, raw outputs out
class _Statistics(nn.Module):
    def __init__(self, stats):
        super().__init__()
        for key in ('qpos_mean', 'qpos_std', 'action_mean', 'action_std'):
            self.register_buffer(key, torch.as_tensor(np.asarray(stats[key], dtype=np.float32)))

    def normalize_qpos(self, qpos):
        return standardize(qpos, self.qpos_mean, self.qpos_std)


class DETRGraph(_Statistics):
    """A policy of one forward pass (ACT, CNNMLP: `predict`): qpos (B, S) float32, images (B, K, H, W, 3) uint8
    -> actions (B, chunk, A) float32."""

    def __init__(self, policy, stats):
        super().__init__(stats)
        self.policy = policy

    def forward(self, qpos, images):
        image = self.policy.normalize(images_to_unit(images))  # (B, K, 3, H, W)
        chunk = self.policy.predict(self.normalize_qpos(qpos), image)  # (B, chunk, A)
        return unstandardize(chunk, self.action_mean, self.action_std)


class DiffusionEncoderGraph(_Statistics):
    """qpos (B, To, S) float32, images (B, To, K, H, W, 3) uint8 -> global condition (B, G) (EMA weights)."""

    def __init__(self, policy, stats):
        super().__init__(stats)
        self.policy = policy

    def forward(self, qpos, images):
        return self.policy._encode(self.policy.ema_nets, self.normalize_qpos(qpos), images_to_unit(images))


class DenoiserGraph(nn.Module):
    """sample (B, horizon, A), timestep (B,) int64, global condition (B, G) -> the predicted noise or clean
    chunk (B, horizon, A)."""

    def __init__(self, policy):
        super().__init__()
        self.unet = policy.ema_nets['policy']['noise_pred_net']

    def forward(self, sample, timestep, global_cond):
        return self.unet(sample, timestep, global_cond)


def example_observation(cfg, batch, obs_horizon=None):
    """Example raw inputs: qpos (B[, To], S) and images (B[, To], K, H, W, 3) uint8."""
    time = (obs_horizon,) if obs_horizon else ()
    height, width = cfg['image_size']
    generator = torch.Generator().manual_seed(batch)
    qpos = torch.randn(batch, *time, cfg['state_dim'], generator=generator)
    images = torch.randint(0, 256, (batch, *time, len(cfg['camera_names']), height, width, 3), dtype=torch.uint8,
                           generator=generator)
    return qpos, images


def graphs(policy, stats, cfg):
    """[(role, module, example inputs, input names, output name)] of the policy's export."""
    if not policy.samples:
        return [('policy', DETRGraph(policy, stats), example_observation(cfg, EXAMPLE_BATCH), ('qpos', 'images'),
                 'actions')]
    encoder = DiffusionEncoderGraph(policy, stats)
    observation = example_observation(cfg, EXAMPLE_BATCH, policy.obs_horizon)
    with torch.inference_mode():
        cond = encoder(*observation)
    sample = torch.randn(EXAMPLE_BATCH, policy.horizon, policy.action_dim)  # (B, horizon, A)
    timestep = torch.full((EXAMPLE_BATCH,), 10, dtype=torch.int64)
    return [('encoder', encoder, observation, ('qpos', 'images'), 'global_cond'),
            ('denoiser', DenoiserGraph(policy), (sample, timestep, cond.clone()), ('sample', 'timestep', 'global_cond'),
             'noise')]


### writing
@contextlib.contextmanager
def quiet():
    """The exporter's and quantiser's progress lines and warnings (about torchvision operators this
    project does not use, and pre-processing advice) kept off the console; errors still raise."""
    loggers = [logging.getLogger(name) for name in ('', 'torch.onnx', 'torch._export', 'torch.export')]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def write_graph(module, inputs, names, output, path, fmt):
    """The graph of `module` on `inputs` into `path`, composed in memory and written atomically (a full
    disk is DiskFull, not a crash inside the exporter's own writer)."""
    module.eval()
    if fmt == 'torchscript':
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            data = io.BytesIO()
            torch.jit.save(torch.jit.trace(module, inputs, check_trace=False), data)
        atomic_write(path, lambda f: f.write(data.getvalue()))
        return
    batch = torch.export.Dim('batch', min=1, max=4096)
    with quiet():
        program = torch.onnx.export(module, inputs, dynamo=True, input_names=list(names), output_names=[output],
                                    dynamic_shapes={name: {0: batch} for name in names}, verbose=False)
    data = program.model_proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))


def check_sampler(policy):
    """A ValueError before any graph is written when the runtime cannot sample as `policy` does."""
    scheduler = policy.cfg.get('scheduler') if policy.samples else None
    if scheduler is not None and scheduler not in SAMPLERS:
        raise ValueError(f"the policy samples with --scheduler {scheduler}; the runtime samples with "
                         f"{' or '.join(SAMPLERS)}: export with --scheduler {SAMPLERS[0]} (the default) or "
                         f"--scheduler {SAMPLERS[1]}, which sample the same trained network")
    if scheduler is not None and (not policy.cfg['clip_sample'] or policy.cfg['clip_sample_range'] != 1.0):
        clip = f"+-{policy.cfg['clip_sample_range']}" if policy.cfg['clip_sample'] else 'nothing'
        raise ValueError(f"the policy clips its clean chunk to {clip}; the runtime's samplers clip to [-1, 1], "
                         f"where the actions are scaled")


def diffusion_constants(policy, normalizer):
    """The sampling loop's constants (deploy/samplers.py) and the action range of a Diffusion policy."""
    cfg = policy.cfg
    check_sampler(policy)
    scheduler = policy.noise_scheduler
    set_sampling_steps(scheduler, cfg['num_inference_steps'])
    if cfg['scheduler'] == 'ddim':
        sampling = {'alphas_cumprod': scheduler.alphas_cumprod.tolist(),
                    'final_alpha_cumprod': float(scheduler.final_alpha_cumprod)}
    else:
        sampling = {'sigmas': scheduler.sigmas.tolist()}  # (S + 1,), the last 0
    # the sampled chunk of `horizon` steps; the actions from `chunk_start` (the current step) are the policy's
    return {'sampler': cfg['scheduler'], 'num_train_timesteps': cfg['num_train_timesteps'],
            'horizon': policy.horizon, 'chunk_start': policy.chunk_start,
            'prediction_type': cfg['prediction_type'], 'timesteps': scheduler.timesteps.tolist(), **sampling,
            'action_min': np.asarray(normalizer.stats['action_min'], dtype=float).tolist(),
            'action_max': np.asarray(normalizer.stats['action_max'], dtype=float).tolist()}


def task_control_hz(task_name):
    """Control rate of the task (constants.control_hz); the original's for a checkpoint that names none."""
    try:
        return float(control_hz(get_task_config(task_name)))
    except (KeyError, ValueError, TypeError):
        return float(CONTROL_HZ)


def manifest(settings, policy, normalizer, fmt, quantize, files, ckpt_path):
    cfg = policy.cfg
    out = {'format_version': FORMAT_VERSION, 'policy_class': policy.policy_class, 'format': fmt,
           'quantize': quantize, 'files': files, 'camera_names': list(settings.camera_names),
           'image_size': list(settings.image_size), 'state_dim': cfg['state_dim'], 'action_dim': cfg['action_dim'],
           'chunk_size': policy.chunk_size, 'action_horizon': policy.action_horizon,
           'obs_horizon': policy.obs_horizon, 'control_hz': task_control_hz(settings.task_name),
           'task_name': settings.task_name,
           'source_checkpoint': {'file': os.path.basename(ckpt_path), 'sha256': file_sha256(ckpt_path)},
           'project_version': PROJECT_VERSION}
    if policy.samples:
        out[SAMPLER] = diffusion_constants(policy, normalizer)
    return out


def eager_chunks(policy, normalizer, qpos, images, seed=0):
    """What evaluation computes for raw inputs: the policy's chunk in robot units (B, chunk, A).
    A Diffusion policy's initial noise is its first draw after torch.manual_seed(seed)."""
    with torch.inference_mode():
        qpos_in = torch.from_numpy(normalizer.normalize_qpos(qpos))
        image_in = images_to_unit(torch.from_numpy(images))
        torch.manual_seed(seed)
        chunk = policy.action_chunk(qpos_in, image_in)
    return normalizer.unnormalize_action(chunk.numpy())


def diffusion_noise(policy, batch, seed=0):
    """The initial sample eager_chunks' Diffusion policy draws: (B, horizon, A)."""
    torch.manual_seed(seed)
    return torch.randn(batch, policy.horizon, policy.action_dim).numpy()


NON_FINITE = 'the policy gives non-finite actions (NaN or infinite weights or statistics): not written'


def data_like_observation(policy, normalizer, cfg, batch):
    """(qpos (B, S) in robot units about the data's mean, images) of `batch` example observations."""
    horizon = policy.obs_horizon if policy.samples else None
    qpos, images = (x.numpy() for x in example_observation(cfg, batch, horizon))
    return unstandardize(qpos, normalizer.stats['qpos_mean'], normalizer.stats['qpos_std']).astype(np.float32), images


def check_finite_actions(policy, normalizer, cfg):
    """A RuntimeError before any graph is written when the eager policy's actions are not finite."""
    if not np.isfinite(eager_chunks(policy, normalizer, *data_like_observation(policy, normalizer, cfg, 1))).all():
        raise RuntimeError(NON_FINITE)


def compare_with_eager(folder, policy, normalizer, cfg):
    """Max |export - eager| of the raw actions over batch sizes CHECK_BATCHES."""
    runner = PolicyRunner(folder)
    worst = 0.0
    for batch in CHECK_BATCHES:
        qpos, images = data_like_observation(policy, normalizer, cfg, batch)
        noise = diffusion_noise(policy, batch) if policy.samples else None
        exported = runner.query(qpos, images, noise=noise)
        difference = float(np.abs(exported - eager_chunks(policy, normalizer, qpos, images)).max())
        if not np.isfinite(difference):
            raise RuntimeError(NON_FINITE)
        worst = max(worst, difference)
    return worst


def recorded_difference(folder, policy, normalizer, observations):
    """Max |export - eager| over recorded observations [(qpos, images)], in the policy's normalised
    action units."""
    qpos, images = (np.stack(x) for x in zip(*observations))
    noise = diffusion_noise(policy, len(qpos)) if policy.samples else None
    exported = PolicyRunner(folder).query(qpos, images, noise=noise)  # (N, chunk, A)
    eager = eager_chunks(policy, normalizer, qpos, images)
    return float(np.abs(normalizer.normalize_action(exported) - normalizer.normalize_action(eager)).max())


def is_export(folder):
    """True when `folder` holds an export and nothing else: policy.json and the files it lists."""
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            listed = {entry['name'] for entry in json.load(f)['files'].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return all(name == MANIFEST or name in listed or name.startswith(tuple(listed))  # + onnx external data
               for name in os.listdir(folder))


def check_out(out, ckpt_dir, overwrite):
    """Refuse an --out that would put the export into or over a training folder, or replace anything
    but an earlier export (only that is --overwrite's to replace)."""
    inside = os.path.commonpath([os.path.abspath(out), os.path.abspath(ckpt_dir)]) == os.path.abspath(out)
    if inside:
        raise FileExistsError(f'--out {out} holds the checkpoint folder {ckpt_dir}: an export goes into a folder '
                              f'of its own (e.g. {os.path.join(ckpt_dir, "export")})')
    if not os.path.exists(out) or (os.path.isdir(out) and not os.listdir(out)):
        return
    if not is_export(out):
        what = 'files beside an export' if os.path.isfile(os.path.join(out, MANIFEST)) else f'no {MANIFEST}'
        raise FileExistsError(f'--out {out} exists and is not an export ({what}): choose another --out; '
                              f'nothing in it was touched')
    if not overwrite:
        raise FileExistsError(f'--out {out} holds an export already: choose another --out, or pass --overwrite '
                              f'to replace it')


def export(settings, ckpt_name, fmt, out, quantize=None, overwrite=False, calibration=None):
    """Export the checkpoint `ckpt_name` run as `settings` describe (evaluation.settings.EvalSettings:
    its opened checkpoint, policy class and config, cameras, image size, task) into the folder `out`
    (built in out.partial, then renamed) -> (policy.json dict, max action difference to eager: over
    example inputs in robot units, or for `int8` over recorded observations in the policy's normalised
    action units). quantize: None, or one of deploy.quantize.QUANTIZE_MODES; `int8` calibrates on `calibration`
    observations (deploy.quantize.calibration_observations)."""
    if quantize and fmt != 'onnx':
        raise ValueError(f'--quantize {quantize}: only ONNX exports are quantised (use --format onnx)')
    if quantize == 'int8' and not calibration:
        raise ValueError('--quantize int8 calibrates on observations from the training episodes: none were given')
    # a second export to out is refused while this one runs; the libraries' writes on a full disk are DiskFull
    with FolderLock(out), space_checked(out):
        check_out(out, settings.checkpoint.path, overwrite)
        return _export(settings, ckpt_name, fmt, out, quantize, calibration)


def _export(settings, ckpt_name, fmt, out, quantize, calibration):
    """export's work, out checked and locked."""
    checkpoint = settings.checkpoint
    normalizer = checkpoint.normalizer(settings.policy_class, settings.policy_config, settings.stats_from,
                                       settings.task_name)
    policy = checkpoint.policy(settings.policy_class, settings.policy_config, ckpt_name, 'cpu',
                               settings.task_name).float().eval()
    check_sampler(policy)
    cfg = dict(policy.cfg, image_size=settings.image_size, camera_names=settings.camera_names)
    check_finite_actions(policy, normalizer, cfg)  # before the graphs' seconds of tracing
    work = make_staging(out.rstrip(os.sep) + '.partial', f'the export {out}')
    try:
        files = {}
        for role, module, inputs, names, output in graphs(policy, normalizer.stats, cfg):
            files[role] = {'name': role + FILE_TYPES[fmt], 'inputs': list(names), 'output': output}
            write_graph(module, inputs, names, output, os.path.join(work, files[role]['name']), fmt)
        if quantize:
            from deploy.quantize import quantize_graphs
            constants = diffusion_constants(policy, normalizer) if policy.samples else None
            with quiet():
                quantize_graphs({role: os.path.join(work, f['name']) for role, f in files.items()}, quantize,
                                policy, constants, calibration)
        for entry in files.values():
            entry['sha256'] = file_sha256(os.path.join(work, entry['name']))
        info = manifest(settings, policy, normalizer, fmt, quantize, files, checkpoint.weights_file(ckpt_name))
        atomic_write(os.path.join(work, MANIFEST), lambda f: json.dump(info, f, indent=2), mode='w')
        difference = compare_with_eager(work, policy, normalizer, cfg)
        if not quantize and not difference <= FP32_TOLERANCE:  # NaN fails too
            raise RuntimeError(f'the export differs from the eager policy by {difference:.2e} (more than '
                               f'{FP32_TOLERANCE}): not written')
        if quantize == 'int8':
            difference = recorded_difference(work, policy, normalizer, calibration[:RECORDED_CHECKS])
            if not difference <= INT8_TOLERANCE:  # NaN fails too
                raise RuntimeError(f'the int8 export differs from the eager policy by {difference:.3f} (normalised '
                                   f'action units) on recorded observations (more than {INT8_TOLERANCE}): not '
                                   f'written; calibrate on more observations (--calibration) or use the fp32 export')
        publish_staging(work, out, replaceable=is_export)  # an earlier export only; a folder raced in stays
    except BaseException:
        drop_staging(work)
        raise
    return info, difference

