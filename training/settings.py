"""The settings of a training run, each once: its default, its command-line help, whether config.json
records it and whether a --resume must keep it.

The command line's flags (cli/flags.py), train_bc's defaults for a config that lacks a key (as
the original's config does), the "training" record of config.json and the --resume check
(loop.py) are all derived from `TrainSettings`.
"""
from dataclasses import MISSING, dataclass, field, fields

from checkpoints.folder import SAVE_FORMATS, TRAINING_STATE
from policies.base import AMP_DTYPES

LR_SCHEDULES = ('constant', 'cosine')  # --lr_schedule


def setting(default, help, choices=None, record=True, resume=False, flag=True):
    """A TrainSettings field. record: written into config.json's "training"; resume: a resumed run
    must have the value the state was written with; flag: a --flag of imitate_episodes.py."""
    return field(default=default, metadata={'help': help, 'choices': choices, 'record': record, 'resume': resume,
                                            'flag': flag})


@dataclass(frozen=True)
class TrainSettings:
    dataset_dir: str = setting(None, 'the episodes folder trained on', flag=False)
    num_episodes: int = setting(None, 'the episodes 0..N-1 trained on', flag=False)
    batch_size: int = setting(8, 'batch size (per process under torchrun), training and validation', resume=True)
    seed: int = setting(0, 'seed of the model initialisation and of the sampling', resume=True)
    num_epochs: int = setting(2000, 'epochs; an epoch takes one sample from each training episode')
    num_steps: int = setting(None, 'train for this many optimizer steps instead of --num_epochs; '
                                   '--validate_every and --save_every then count steps')
    amp: str = setting('off', 'mixed precision (bf16 on recent CPUs and GPUs; fp16 on CUDA only)',
                       tuple(AMP_DTYPES))
    grad_accum: int = setting(1, 'batches accumulated per optimizer step', resume=True)
    lr_schedule: str = setting('constant', 'learning-rate schedule over the optimizer steps', LR_SCHEDULES)
    warmup_steps: int = setting(0, 'linear warm-up steps')
    validate_every: int = setting(1, 'validate every N epochs (or steps)')
    save_every: int = setting(100, 'write policy_epoch_{N}_seed_{seed}.ckpt, the plots and the training state every '
                                   'N epochs (or steps)')
    clip_grad_norm: float = setting(None, 'clip the gradient norm to this (default: no clipping, as the original)')
    save_format: str = setting('ckpt', "policy_*.ckpt (torch.save of the state_dict, the original's) or "
                                       'policy_*.safetensors (no pickle)', tuple(SAVE_FORMATS))
    init_from: str = setting(None, 'start from the weights of a checkpoint: a folder of this project (its '
                                   'policy_best), one of its policy files, or a LeRobot ACT pretrained_model/ folder; '
                                   'model flags left out take its settings, tensors that do not fit (another state or '
                                   'action size) start afresh and are listed; the optimizer and schedule start fresh')
    keep_init_stats: bool = setting(False, "with --init_from: normalise with its checkpoint's statistics instead "
                                           "of the new data's")
    freeze_backbone: bool = setting(False, 'keep the image trunk fixed (ACT, CNNMLP)')
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass instead of keeping "
                                                  "them (the transformer's layers, the trunk's stages, the UNet's "
                                                  "blocks): less memory for more time, the same losses")
    resume: bool = setting(False, f'continue from {TRAINING_STATE} in --ckpt_dir (refused when the settings or '
                                  'the data differ from those it was trained with)', record=False)
    wandb: bool = setting(False, 'log the metrics to Weights & Biases (WANDB_MODE=offline: no network)', record=False)
    tensorboard: bool = setting(False, 'also write the metrics as TensorBoard event files in --ckpt_dir/tensorboard',
                                record=False)
    world_size: int = setting(1, 'processes training together (torchrun)', record=False, resume=True, flag=False)

    @classmethod
    def names(cls, role):
        """The settings marked `role` ('record', 'resume' or 'flag'), in declaration order."""
        return tuple(f.name for f in fields(cls) if f.metadata[role])

    @classmethod
    def defaults(cls):
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def flag_spec(cls, name):
        """argparse keywords of --name: type, default, help and choices (store_true for a bool)."""
        f = next(f for f in fields(cls) if f.name == name)
        spec = {'default': f.default, 'help': f.metadata['help']}
        if f.type in ('bool', bool):
            return {**spec, 'action': 'store_true'}
        spec['type'] = {'int': int, 'float': float, 'str': str}.get(f.type, f.type)
        if f.metadata['choices']:
            spec['choices'] = f.metadata['choices']
        return spec
