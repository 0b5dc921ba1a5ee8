"""Run an exported policy (export_policy.py) on a robot's computer: onnxruntime and numpy, no torch.

    from deploy.runtime import PolicyRunner
    runner = PolicyRunner('deploy/cube')            # the folder export_policy.py wrote
    runner.reset()                                  # at the start of every episode
    action = runner.act(qpos, images)               # qpos (state_dim,) float, images (cams, H, W, 3) uint8
    chunk = runner.query(qpos_batch, image_batch)   # (B, state_dim), (B, cams, H, W, 3) -> (B, chunk, action_dim)

Everything is in robot units: the dataset statistics and the image normalisation are inside the
exported graph. ONNX exports run on onnxruntime, or on OpenVINO with engine='openvino' (fp32 kept).
act() plays the chunks through the action chunker evaluation uses (policies/chunker.py): a query
every action_horizon steps whose chunk is played step by step, or with temporal_agg a query every
step and the weighted average of every chunk's prediction for this step (weights exp(-0.01 i),
i = 0 the oldest). A Diffusion
export is its observation encoder and its denoising network; the sampling loop (DDIM or DPM-Solver++,
deploy/samplers.py) runs here with the scheduler's constants from policy.json. A TorchScript export (.pt) needs torch.
"""
import hashlib
import os

import numpy as np

from common.checks import check_values, is_name_list, is_positive_int, is_positive_ints
from common.folders import inside_folder
from common.safe_load import load_json
from deploy.engines import check_engine, load_graph
from deploy.samplers import make_sampler
from formats.normalize import from_unit_range
from policies.chunker import ActionChunker, ObservationHistory, checked_action
from policies.executor import GUIDED, ChunkExecutor, ThreadedPolicy, default_threshold

MANIFEST = 'policy.json'
FORMAT_VERSION = 1
FILE_TYPES = {'onnx': '.onnx', 'torchscript': '.pt'}  # policy.json's format -> its graphs' file extension
SAMPLER = 'diffusion'  # policy.json's sampler constants: the export samples its chunk (and takes observation histories)
SAMPLED_ROLES, DIRECT_ROLES = ('encoder', 'denoiser'), ('policy',)  # the graphs of a sampled policy, of the others
REQUIRED_KEYS = ('format_version', 'policy_class', 'format', 'files', 'camera_names', 'image_size', 'state_dim',
                 'action_dim', 'chunk_size', 'action_horizon', 'obs_horizon')


class ExportError(ValueError):
    """An export that cannot be used (the message names the file and what was expected)."""


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder):
    """policy.json of an export, checked: its keys, and each model file against its recorded hash."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise ExportError(f'{path}: not found; export the policy first: python export_policy.py --ckpt_dir CKPT '
                          f'--format onnx --out {folder}')
    manifest = load_json(path, ExportError)
    if not isinstance(manifest, dict):
        raise ExportError(f'{path}: an object ({{...}}) is expected, not {type(manifest).__name__}; export the '
                          f'policy again')
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise ExportError(f'{path}: lacks {", ".join(missing)}; export the policy again')
    check_values(manifest, path, manifest_problem, ExportError, '; export the policy again')
    if manifest['format_version'] > FORMAT_VERSION:
        raise ExportError(f'{path}: export format {manifest["format_version"]} is newer than this runtime '
                          f'reads ({FORMAT_VERSION}); update the project')
    for role, entry in manifest['files'].items():
        model_path = os.path.join(folder, inside_folder(folder, entry['name'], path, f'files.{role}.name', ExportError))
        if not os.path.isfile(model_path):
            raise ExportError(f'{model_path}: missing ({role} of the export in {path})')
        if file_sha256(model_path) != entry['sha256']:
            raise ExportError(f'{model_path}: does not match {path} (its SHA-256 differs from the one recorded at '
                              f'export): the file is corrupted or comes from another export; export again')
    return manifest


def manifest_problem(manifest):
    """What is wrong with the values of a policy.json, or None."""
    sizes = ['format_version', 'state_dim', 'action_dim', 'chunk_size', 'action_horizon', 'obs_horizon']
    wrong = [key for key in sizes if not is_positive_int(manifest[key])]
    if wrong:
        return f'{wrong[0]} {manifest[wrong[0]]!r} is not a positive integer'
    image_size, cameras, files = manifest['image_size'], manifest['camera_names'], manifest['files']
    if not is_positive_ints(image_size, 2):
        return f'image_size {image_size!r} is not two positive integers [H, W]'
    if not is_name_list(cameras):
        return f'camera_names {cameras!r} is not a list of camera names'
    if not (isinstance(files, dict) and files and all(isinstance(e, dict) and isinstance(e.get('name'), str)
                                                      and isinstance(e.get('sha256'), str) for e in files.values())):
        return 'files is not an object of {role: {"name", "sha256"}} entries'
    if manifest['format'] not in FILE_TYPES:
        return f"format {manifest['format']!r} is not one of {', '.join(FILE_TYPES)}"
    foreign = [e['name'] for e in files.values() if not e['name'].endswith(FILE_TYPES[manifest['format']])]
    if foreign:
        return f"format {manifest['format']!r} but {foreign[0]} is not a {FILE_TYPES[manifest['format']]} file"
    roles = SAMPLED_ROLES if SAMPLER in manifest else DIRECT_ROLES
    if sorted(files) != sorted(roles):
        return f"files has the graphs {sorted(files)}; a {manifest['policy_class']} export has {list(roles)}"
    if manifest['action_horizon'] > manifest['chunk_size']:
        return f"action_horizon {manifest['action_horizon']} is more than chunk_size {manifest['chunk_size']}"
    return None


class _Session:
    """One exported graph behind run(inputs dict) -> outputs list, loaded by its engine (deploy/engines.py)."""

    def __init__(self, path, fmt, threads, engine='onnxruntime'):
        self.path = path
        try:
            self._load(fmt, threads, engine)
        except Exception as err:  # noqa: BLE001 (each engine's own error types for a file it cannot load)
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ExportError(f'{path}: cannot be loaded as the {fmt} graph {MANIFEST} says it is ({first_line}); '
                              f'export the policy again') from None

    def _load(self, fmt, threads, engine):
        graph = load_graph(self.path, fmt, threads, engine)
        self.run, self.inputs = graph.run, graph.inputs

    def check_input(self, name, shape):
        """The graph's declared shape of input `name` must agree with policy.json (symbolic dims aside)."""
        if self.inputs is None:
            return
        declared = self.inputs.get(name)
        if declared is None:
            raise ExportError(f'{self.path}: has no input {name!r} (inputs: {sorted(self.inputs)}): the model file '
                              f'and {MANIFEST} come from different exports')
        fixed = [(d, s) for d, s in zip(declared[1:], shape[1:]) if isinstance(d, int)]
        if len(declared) != len(shape) or any(d != s for d, s in fixed):
            raise ExportError(f'{self.path}: input {name!r} has shape {declared} but {MANIFEST} describes '
                              f'{["B"] + list(shape[1:])}: the model file and {MANIFEST} come from different exports')


class PolicyRunner:
    """An exported policy: query() for raw action chunks, act() for one action per control step.
    engine: 'onnxruntime', or 'openvino' (faster on many x86 CPUs; fp32 kept) for ONNX exports."""

    def __init__(self, folder, temporal_agg=False, threads=None, seed=0, engine='onnxruntime'):
        self.folder = folder
        self.manifest = m = read_manifest(folder)
        self.policy_class = m['policy_class']
        self.camera_names, self.image_size = list(m['camera_names']), tuple(m['image_size'])
        self.state_dim, self.action_dim = m['state_dim'], m['action_dim']
        self.chunk_size, self.action_horizon, self.obs_horizon = m['chunk_size'], m['action_horizon'], m['obs_horizon']
        self.temporal_agg = temporal_agg
        self.chunker = ActionChunker(self.chunk_size, self.action_horizon, temporal_agg, self.obs_horizon)
        self.sampled = SAMPLER in m  # a sampled chunk (Diffusion) from observation histories
        self.rng = np.random.default_rng(seed)  # the sampling noise
        check_engine(engine)
        self.sessions = {role: _Session(os.path.join(folder, entry['name']), m['format'], threads, engine)
                         for role, entry in m['files'].items()}
        if self.sampled:
            try:
                self.sampler = make_sampler(m[SAMPLER])
            except ValueError as err:
                raise ExportError(f'{os.path.join(folder, MANIFEST)}: {err}; export the policy again') from None
            # the sampled chunk's length and where the current step's action is in it (LeRobot's style: not 0)
            self.horizon = m[SAMPLER].get('horizon', self.chunk_size)
            self.chunk_start = m[SAMPLER].get('chunk_start', 0)
            self.action_low = np.asarray(m[SAMPLER]['action_min'], dtype=np.float64)
            self.action_high = np.asarray(m[SAMPLER]['action_max'], dtype=np.float64)
        self._check_graphs()
        self.reset()

    ### shapes
    def _observation_shapes(self, batch=1):
        time = (self.obs_horizon,) if self.sampled else ()
        height, width = self.image_size
        return ((batch, *time, self.state_dim),
                (batch, *time, len(self.camera_names), height, width, 3))

    def _check_graphs(self):
        """The graphs' inputs, then what they return for a blank observation, against policy.json."""
        qpos_shape, image_shape = self._observation_shapes()
        first = self.sessions['encoder' if self.sampled else 'policy']
        first.check_input('qpos', qpos_shape)
        first.check_input('images', image_shape)
        if self.sampled:
            self.sessions['denoiser'].check_input('sample', (1, self.horizon, self.action_dim))
        feeds = {'qpos': np.zeros(qpos_shape, np.float32), 'images': np.zeros(image_shape, np.uint8)}
        last = self.sessions['denoiser' if self.sampled else 'policy']
        if self.sampled:
            feeds = {'sample': np.zeros((1, self.horizon, self.action_dim), np.float32),
                     'timestep': np.zeros(1, np.int64), 'global_cond': first.run(feeds)[0]}
        returned, expected = last.run(feeds)[0].shape, (1, self.horizon if self.sampled else self.chunk_size,
                                                        self.action_dim)
        if returned != expected:
            raise ExportError(f'{last.path}: returns chunks of {returned[1]} actions of {returned[-1]} values, but '
                              f'{MANIFEST} says {expected[1]} of {expected[2]} (chunk_size, action_dim): the model '
                              f'file and {MANIFEST} come from different exports')

    def _checked(self, qpos, images):
        qpos = np.asarray(qpos, dtype=np.float32)
        images = np.asarray(images)
        qpos_shape, image_shape = self._observation_shapes(len(qpos) if qpos.ndim else 0)
        cams = ', '.join(self.camera_names)
        if qpos.shape != qpos_shape:
            raise ValueError(f'qpos of shape {qpos.shape}: the policy expects {qpos_shape} (batch, '
                             f'{"obs_horizon, " if len(qpos_shape) == 3 else ""}state_dim {self.state_dim})')
        if images.shape != image_shape or images.dtype != np.uint8:
            raise ValueError(f'images of shape {images.shape} and dtype {images.dtype}: the policy expects uint8 '
                             f'{image_shape} (batch, {"obs_horizon, " if len(image_shape) == 6 else ""}'
                             f'{len(self.camera_names)} cameras [{cams}], height, width, RGB); resize frames to '
                             f'{self.image_size[0]}x{self.image_size[1]} first')
        return qpos, images

    ### queries
    def query(self, qpos, images, noise=None):
        """qpos (B, state_dim), images (B, cams, H, W, 3) uint8 (Diffusion: with an obs_horizon axis after B)
        -> raw actions (B, chunk_size, action_dim) float32. noise: Diffusion's initial sample (B, horizon, A),
        horizon the chunk_size and the observations before the current one in LeRobot's style."""
        qpos, images = self._checked(qpos, images)
        if not self.sampled:
            return self.sessions['policy'].run({'qpos': qpos, 'images': images})[0]
        cond = self.sessions['encoder'].run({'qpos': qpos, 'images': images})[0]  # (B, G)
        batch = len(qpos)
        if noise is None:
            noise = self.rng.standard_normal((batch, self.horizon, self.action_dim))

        def denoise(sample, t):  # -> the noise or the clean chunk (B, horizon, A)
            return self.sessions['denoiser'].run({'sample': sample, 'timestep': np.full(batch, t, dtype=np.int64),
                                                  'global_cond': cond})[0]
        sample = self.sampler.sample(noise, denoise)[:, self.chunk_start:]  # (B, chunk, A) in [-1, 1]
        return from_unit_range(sample, self.action_low, self.action_high).astype(np.float32)

    ### one action per step
    def reset(self, seed=None):
        """A new episode: forget the chunk, the ensembled predictions and the observation history."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.chunker.reset()

    def _inputs(self, history):
        """The last obs_horizon (qpos (S,), images (cams, H, W, 3)) -> a batch of one, with a time
        axis for Diffusion."""
        if not self.sampled:
            qpos, images = history[-1]
            return np.asarray(qpos)[None], np.asarray(images)[None]
        return (np.stack([q for q, _ in history])[None], np.stack([im for _, im in history])[None])

    def realtime(self, strategy='ensemble', threshold=None, stall_s=None):
        """This policy behind the asynchronous executor (policies/executor.py): its act() never waits
        for a query after the episode's first, which runs in a thread beside the control loop; a new
        chunk joins the queued actions by `strategy` ('ensemble' or 'replace'), requested when
        `threshold` actions or fewer are queued (default: the chunk size for ensemble, half of it
        for replace). stall_s: seconds with nothing left to play after which act() waits for the query."""
        return RealtimeRunner(self, strategy, threshold, stall_s)

    def act(self, qpos, images):
        """qpos (state_dim,), images (cams, H, W, 3) uint8 of this step -> the raw action (action_dim,) float64;
        NonFiniteAction (a ValueError naming the step) instead of a NaN or infinite action."""
        history = self.chunker.observe((qpos, images))
        step = self.chunker.t
        chunk = self.query(*self._inputs(history))[0] if self.chunker.query_due else None  # (chunk, A)
        return checked_action(np.asarray(self.chunker.play(chunk), dtype=np.float64), step)


class RealtimeRunner:
    """PolicyRunner.realtime(): one raw action per control step, the queries beside the loop.

        live = runner.realtime()
        live.reset()
        action = live.act(qpos, images)   # returns at once after the first step
        live.close()                      # the query thread ends
    """

    def __init__(self, runner, strategy, threshold, stall_s):
        if strategy in GUIDED:
            raise ValueError(f"strategy {strategy!r} guides the denoising through the policy's gradients, which an "
                             f"export does not have: run the torch policy (imitate_episodes.py --eval --realtime "
                             f"--execution {strategy}), or use 'replace' or 'ensemble' here")
        if threshold is None:
            threshold = default_threshold(strategy, runner.chunk_size)
        self.runner = runner
        self.history = ObservationHistory(runner.obs_horizon)
        executor = ChunkExecutor(runner.chunk_size, threshold, strategy)
        self.threaded = ThreadedPolicy(self._query, executor, stall_s)

    @property
    def executor(self):
        return self.threaded.executor

    def _query(self, history, guide):
        return self.runner.query(*self.runner._inputs(history))[0]  # (chunk, A) raw

    def reset(self, seed=None):
        self.runner.reset(seed)
        self.history.clear()
        self.threaded.reset()

    def act(self, qpos, images):
        """As PolicyRunner.act, without waiting for the policy after the first step."""
        history = self.history.observe((qpos, images))
        step = self.executor.t
        return checked_action(np.asarray(self.threaded(history), dtype=np.float64), step)

    def close(self):
        self.threaded.close()
