"""What an evaluation reads from its config, in one object: the run's keys and the evaluation's own.

Evaluation (rollout.py, offline.py) and export (deploy/export.py) take these settings; the
command line builds them (cli/run_config.py), and the checkpoint folder is opened once, here.
"""
import dataclasses

from checkpoints.reader import Checkpoint, open_checkpoint
from constants import IMAGE_HW


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
    image_size: tuple = IMAGE_HW  # (H, W) the policy sees; sim evaluation renders at it
    shadows: bool = True  # False: sim frames rendered without shadows, as the policy's training frames were
    device: str = 'cpu'
    num_rollouts: int = 50
    eval_workers: int = 1  # rollouts in this many processes
    save_video: bool = True
    robot_backend: str = 'builtin'
    robot_driver: str = 'auto'
    stats_from: str = None  # a dataset folder (episode files or LeRobot) whose statistics replace the checkpoint's
    runtime: str = 'torch'  # 'onnxruntime' / 'openvino': the exported policy through policy_runtime.PolicyRunner
    export_dir: str = None  # --runtime onnxruntime: the export (default: exported next to the checkpoint)
    execution: object = None  # evaluation.execution.Execution (asynchronous execution); None: synchronous
    checkpoint: Checkpoint = None  # the opened ckpt_dir (checkpoints.reader); opened from ckpt_dir when None

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

    def __post_init__(self):
        if self.checkpoint is None:  # the folder is opened once, here, and travels with the settings
            object.__setattr__(self, 'checkpoint', open_checkpoint(self.ckpt_dir))
