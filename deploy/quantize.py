"""int8 quantisation of an export's ONNX graphs (onnxruntime's quantisation tools, imported only here).

- `int8`: static post-training quantisation in QDQ form. The weights of the convolutions and matrix
  products are int8 per output channel; their input activations are uint8 with ranges calibrated
  (min-max) on observations from the run's own training episodes, so the whole graph, the ResNet
  trunk included, runs int8 kernels. Normalisations, softmax and the rest stay fp32.
- `int8-dynamic`: the weights of the matrix products only, activations quantised per query from
  their own range (no calibration); the convolutions stay fp32.

A Diffusion export's denoiser is calibrated on the inputs it meets while sampling: the fp32
encoder's condition for each calibration observation and the samples of every denoising step.

    quantize_graphs({'policy': 'export/policy.onnx'}, 'int8', policy, constants, observations)  # in place
"""
import os

import numpy as np

from formats.episode import check_finite

QUANTIZE_MODES = ('int8', 'int8-dynamic')
STATIC_OPS = ('Conv', 'MatMul', 'Gemm')  # the operators static int8 covers
DYNAMIC_OPS = ('MatMul',)  # the operators dynamic int8 covers (convolutions stay fp32)
CALIBRATION_SAMPLES = 200  # --calibration's default: observations the activation ranges are taken over


def calibration_of(settings, dataset_dir, count):
    """The observations `--quantize int8` calibrates on: `count` from the episodes in dataset_dir,
    or when it is None from the training episodes config.json names (settings: EvalSettings)."""
    from formats.datasets import open_dataset
    training = ((settings.checkpoint.config or {}).get('training') or {}).get('dataset_dir')
    folder = dataset_dir or training
    if not folder or not os.path.isdir(folder):
        where = (f'the training episodes {training} are not here' if training else
                 'config.json names no training episodes')
        raise FileNotFoundError(f'--quantize int8 calibrates on recorded observations and {where}: give '
                                f'--dataset_dir (the episodes the policy was trained on)')
    from policies.registry import get_policy_class
    sampled = get_policy_class(settings.policy_class).samples
    horizon = (settings.policy_config.get('obs_horizon') or 1) if sampled else None
    return calibration_observations(open_dataset(folder), settings.camera_names, settings.image_size, count, horizon)


def calibration_observations(episodes, camera_names, image_size, count, obs_horizon=None, seed=0):
    """`count` observations spread over the episodes (formats.datasets.open_dataset) and their
    steps, at the policy's image size -> [(qpos (S,), images (K, H, W, 3) uint8)], or with an
    observation horizon To [(qpos (To, S), images (To, K, H, W, 3))], the steps before the first
    repeating it as evaluation does. No more than the episodes' steps are drawn (a larger count is
    capped, with a note); an episode whose state holds NaN or infinity is refused by name."""
    from formats.images import resize_images
    qpos_of = [checked_qpos(episodes, index) for index in range(episodes.num_episodes)]  # [(T_i, S)]
    steps = sum(len(qpos) for qpos in qpos_of)
    if count > steps:
        print(f'--calibration {count}: the episodes hold {steps} steps; calibrating on {steps} observations')
        count = steps
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, episodes.num_episodes, count)  # (count,) episode of each sample
    found = []
    for index in np.unique(picks):
        qpos = qpos_of[index]  # (T, S)
        for t in rng.integers(0, len(qpos), int((picks == index).sum())):
            window = np.arange(t - (obs_horizon or 1) + 1, t + 1).clip(0)  # (To,)
            images = np.stack([resize_images(episodes.frames(index, cam, window), image_size)
                               for cam in camera_names], axis=1)  # (To, K, H, W, 3)
            sample = (qpos[window].astype(np.float32), images)
            found.append(sample if obs_horizon else (sample[0][0], sample[1][0]))
    return found


def checked_qpos(episodes, index):
    """qpos (T, S) of one episode; ValueError naming it when a value is NaN or infinite."""
    try:
        return check_finite(episodes.low_dim(index)[0], episodes.name(index), 'qpos')
    except ValueError as err:
        raise ValueError(f'{err}; int8 calibration needs finite observations (record or repair the episode, or '
                         f'calibrate on other ones with --dataset_dir)') from None


def quantize_static_int8(path, feeds):
    """Static int8 (QDQ) of the ONNX graph at `path`, in place; feeds: [{input name: array}] of the
    calibration samples."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)
    fp32, prepared = path + '.fp32', path + '.prepared'
    os.replace(path, fp32)
    try:
        quant_pre_process(fp32, prepared, skip_symbolic_shape=True)  # folded constants, shapes for the quantiser
        quantize_static(prepared, path, Feeds(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(STATIC_OPS),
                        nodes_to_exclude=openvino_unsafe_products(prepared), per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        for leftover in (fp32, prepared):
            if os.path.exists(leftover):
                os.remove(leftover)


def openvino_unsafe_products(path):
    """The matrix products OpenVINO cannot compile quantised, left fp32: those whose first input is
    a constant (the quantiser would quantise it per channel like a weight) or a concatenation
    (OpenVINO turns the parts' different ranges into a per-token scale the product refuses): in ACT,
    the positional embeddings and the first encoder layer's projections of the tokens."""
    import onnx
    graph = onnx.load(path).graph
    constants = {tensor.name for tensor in graph.initializer}
    concatenated = {out for node in graph.node if node.op_type == 'Concat' for out in node.output}
    return [node.name for node in graph.node
            if node.op_type in STATIC_OPS and (node.input[0] in constants or node.input[0] in concatenated)]


def quantize_dynamic_int8(path):
    """Dynamic int8 of the weights of DYNAMIC_OPS in place (activations quantised per query), per
    output channel and in 7 bits: without VNNI, x86 int8 kernels add products in 16 bits, which
    full-range weights saturate. The 7-bit weights cut the CPU recipe's largest action error to fp32
    from 0.18 to 0.018 at the same speed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    fp32 = path + '.fp32'
    os.replace(path, fp32)
    try:
        quantize_dynamic(fp32, path, op_types_to_quantize=list(DYNAMIC_OPS), weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=True)
    finally:
        os.remove(fp32)


def policy_feeds(observations):
    """ACT / CNNMLP (or the Diffusion encoder): one feed per observation, batch 1."""
    return [{'qpos': qpos[None], 'images': images[None]} for qpos, images in observations]


def denoiser_feeds(encoder_path, denoiser_path, sampler, observations, chunk_shape, seed=0):
    """The denoiser's inputs while the fp32 graphs sample each observation's chunk: [{'sample',
    'timestep', 'global_cond'}], one per observation and denoising step. sampler: deploy.samplers'
    sampler of the export; chunk_shape: (horizon, A), the sampled chunk."""
    import onnxruntime as ort
    encoder, denoiser = (ort.InferenceSession(p, providers=['CPUExecutionProvider']) for p in (encoder_path,
                                                                                               denoiser_path))
    rng = np.random.default_rng(seed)
    feeds = []
    for qpos, images in observations:
        cond = encoder.run(None, {'qpos': qpos[None], 'images': images[None]})[0]  # (1, G)

        def denoise(sample, t, cond=cond):
            feed = {'sample': sample, 'timestep': np.full((1,), t, dtype=np.int64), 'global_cond': cond}
            feeds.append(feed)
            return denoiser.run(None, feed)[0]
        sampler.sample(rng.standard_normal((1, *chunk_shape)).astype(np.float32), denoise)
    return feeds


def quantize_graphs(paths, mode, policy, diffusion_constants=None, observations=None):
    """Quantise the written graphs {role: path} in place by `mode` (QUANTIZE_MODES); `int8` calibrates
    on observations (calibration_observations), a Diffusion denoiser on the sampling the export's
    diffusion_constants describe."""
    if mode == 'int8-dynamic':
        for path in paths.values():
            quantize_dynamic_int8(path)
        return
    feeds = {role: policy_feeds(observations) for role in paths}
    if 'denoiser' in paths:
        from deploy.samplers import make_sampler
        feeds['denoiser'] = denoiser_feeds(paths['encoder'], paths['denoiser'], make_sampler(diffusion_constants),
                                           observations, (policy.horizon, policy.action_dim))
    for role, path in paths.items():
        quantize_static_int8(path, feeds[role])
