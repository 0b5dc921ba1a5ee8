"""The flags of imitate_episodes.py: the original's first, then the data, model, training and
evaluation flags this project adds, and the checks of their values. Training settings take their
default and help from training.settings.TrainSettings."""
import argparse
import math

from checkpoints.folder import BEST_CKPT
from constants import canonical_task_name, get_task_config, sim_task_names
from deploy.runtime import ENGINES
from detr.resnet import BACKBONES
from evaluation.offline import DIFFUSION_SAMPLES
from policies.diffusion import PREDICTION_TYPES, SCHEDULERS, STYLES
from policies.executor import STRATEGIES
from policies.registry import get_policy_class, policy_names
from policies.rtc import MAX_GUIDANCE_WEIGHT
from real_robot.settings import ROBOT_BACKENDS, ROBOT_DRIVERS
from training.settings import TrainSettings

CKPT_ROOT = 'ckpt'  # --ckpt_dir defaults to CKPT_ROOT/<task_name>, relative to the working folder


class UsageError(ValueError):
    """A flag missing or out of its range: imitate_episodes.py answers with its usage line (exit 2)."""

# Flags that set a policy_config key (flag -> key); a flag left out takes the policy's default.
POLICY_FLAGS = {
    'chunk_size': 'num_queries', 'kl_weight': 'kl_weight', 'hidden_dim': 'hidden_dim',
    'dim_feedforward': 'dim_feedforward', 'enc_layers': 'enc_layers', 'dec_layers': 'dec_layers',
    'nheads': 'nheads', 'latent_dim': 'latent_dim', 'dropout': 'dropout', 'pre_norm': 'pre_norm',
    'backbone': 'backbone', 'per_camera_backbone': 'per_camera_backbone', 'lr': 'lr', 'lr_backbone': 'lr_backbone',
    'weight_decay': 'weight_decay', 'backbone_weights': 'backbone_weights',
    'pretrained_backbone': 'pretrained_backbone', 'num_inference_steps': 'num_inference_steps',
    'scheduler': 'scheduler', 'prediction_type': 'prediction_type', 'obs_horizon': 'obs_horizon',
    'action_horizon': 'action_horizon', 'down_dims': 'down_dims', 'augment_images': 'augment_images',
    'use_vae': 'use_vae', 'diffusion_style': 'style', 'crop_shape': 'crop_shape',
}

# Numeric flags -> (test, what it admits); a flag left out (None) is not checked.
_AT_LEAST_1 = (lambda v: v >= 1, 'at least 1')
_AT_LEAST_0 = (lambda v: v >= 0, '0 or more')
FLAG_RANGES = {
    **{flag: _AT_LEAST_1 for flag in (
        'batch_size', 'num_epochs', 'num_steps', 'grad_accum', 'validate_every', 'save_every', 'chunk_size',
        'hidden_dim', 'dim_feedforward', 'enc_layers', 'dec_layers', 'nheads', 'latent_dim', 'num_inference_steps',
        'obs_horizon', 'action_horizon', 'num_rollouts', 'eval_workers')},
    **{flag: _AT_LEAST_0 for flag in ('warmup_steps', 'num_workers', 'kl_weight', 'lr_backbone', 'weight_decay',
                                      'diversity_samples', 'inference_delay', 'queue_threshold')},
    'lr': (lambda v: v > 0, 'more than 0'),
    'clip_grad_norm': (lambda v: v > 0, 'more than 0'),
    'max_guidance_weight': (lambda v: v > 0, 'more than 0'),
    'dropout': (lambda v: 0 <= v < 1, 'in [0, 1)'),
}


def task_name_arg(task_name):
    """argparse type of --task_name: the task a known name means, else a usage error listing them."""
    try:
        get_task_config(task_name)
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from e
    return canonical_task_name(task_name)


def flag_problem(args):
    """A message naming the first numeric flag out of its range (FLAG_RANGES), or None."""
    for flag, (admitted, text) in FLAG_RANGES.items():
        value = args.get(flag)
        if value is None:
            continue
        if not math.isfinite(value):
            return f'--{flag} must be a finite number, got {value}'
        if not admitted(value):
            return f'--{flag} must be {text}, got {value}'
    if args.get('image_size') and min(args['image_size']) < 1:
        return f"--image_size must be two positive integers H W, got {' '.join(map(str, args['image_size']))}"
    if args.get('policy_class') in policy_names():
        values = {key: args.get(flag) for flag, key in POLICY_FLAGS.items()}  # policy_config key -> flag value
        return get_policy_class(args['policy_class']).settings_problem(values)
    return None


def _policy_default(key, *policies):
    """'(default: X)' text of a policy_config key, for the policies named."""
    values = {name: get_policy_class(name).defaults[key] for name in policies}
    if len(set(map(str, values.values()))) == 1:
        return f'(default: {next(iter(values.values()))})'
    return '(default: ' + ', '.join(f'{v} for {name}' for name, v in values.items()) + ')'


def build_parser(description=None):
    """The command line of imitate_episodes.py: the original's flags first, then the new ones."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _original_flags(parser)
    _data_flags(parser)
    _model_flags(parser)
    _training_flags(parser)
    _evaluation_flags(parser)
    return parser


def _original_flags(parser):
    add = parser.add_argument
    add('--eval', action='store_true', help='evaluate the --eval_ckpt checkpoint instead of training')
    add('--onscreen_render', action='store_true', help='show the simulation while evaluating')
    add('--ckpt_dir', help=f'folder for checkpoints, statistics, config.json and plots (default: '
        f'{CKPT_ROOT}/<task_name>)')
    add('--policy_class', choices=policy_names(), help='policy to train (--eval: read from config.json)')
    add('--task_name', type=task_name_arg, help=f'sim tasks from constants.py ({sim_task_names()}), '
        'others from real_robot.TASK_CONFIGS (--eval: read from config.json)')
    for name in ('batch_size', 'seed', 'num_epochs'):
        add(f'--{name}', **TrainSettings.flag_spec(name))
    add('--lr', type=float,
        help='learning rate (the backbone uses --lr_backbone) ' + _policy_default('lr', 'ACT', 'Diffusion'))
    add('--kl_weight', type=float, help='ACT: weight of the KL term of the loss ' + _policy_default('kl_weight', 'ACT'))
    add('--chunk_size', '--horizon', dest='chunk_size', type=int, help='actions predicted per query (ACT '
        "num_queries; Diffusion's prediction horizon, LeRobot's --horizon) "
        + _policy_default('num_queries', 'ACT', 'Diffusion'))
    add('--hidden_dim', type=int, help='ACT: transformer width ' + _policy_default('hidden_dim', 'ACT'))
    add('--dim_feedforward', type=int, help='ACT: feed-forward width ' + _policy_default('dim_feedforward', 'ACT'))
    add('--temporal_agg', action='store_true', help='evaluation: temporal ensembling of chunks')


def _data_flags(parser):
    add = parser.add_argument
    add('--dataset_dir', help="episodes folder: episode_*.hdf5 files or a LeRobot dataset (v3.0, v2.1) "
                              "(default: the task's, under ACT_DATA_DIR)")
    add('--num_episodes', type=int, help="episodes 0..N-1 to use (default: the task's; a LeRobot dataset's: all)")
    add('--camera_names', nargs='+', help="cameras the policy sees (default: the task's; a LeRobot dataset's: "
                                          "all its observation.images.<camera>)")
    add('--image_size', type=int, nargs=2, metavar=('H', 'W'),
        help="image size the policy sees: training resizes frames to it, sim evaluation renders at it "
             "(default: the data's size for training, config.json's or 480 640 for evaluation)")
    add('--record_missing', action='store_true', help="training a scripted sim task: record the task's missing "
        'episodes first (at --image_size when given, else 480 640), then train')
    add('--num_workers', type=int, help='data loader processes (default: 0 when frames are preloaded, else 1)')
    add('--preload', choices=('auto', 'on', 'off'), default='auto',
        help='hold all frames in memory (auto: when they take under half the free memory)')


def _model_flags(parser):
    add = parser.add_argument
    for flag, text in (('enc_layers', 'transformer encoder layers'), ('dec_layers', 'transformer decoder layers'),
                       ('nheads', 'attention heads'), ('latent_dim', 'size of the CVAE latent')):
        add(f'--{flag}', type=int, help=f'ACT: {text} ' + _policy_default(flag, 'ACT'))
    add('--dropout', type=float, help='ACT: transformer dropout ' + _policy_default('dropout', 'ACT'))
    add('--use_vae', action=argparse.BooleanOptionalAction,
        help="ACT: the CVAE objective; --no-use_vae (or --no_vae, LeRobot's use_vae false) trains without it: the "
             'latent is zero in training too and the loss has no KL term ' + _policy_default('use_vae', 'ACT'))
    add('--no_vae', dest='use_vae', action='store_false', default=argparse.SUPPRESS, help='ACT: --no-use_vae')
    add('--pre_norm', action='store_true', default=None, help='ACT: layer norm before attention (pre-norm)')
    add('--backbone', choices=BACKBONES,
        help='image backbone ' + _policy_default('backbone', 'ACT', 'Diffusion'))
    add('--per_camera_backbone', action='store_true', default=None, help='ACT: one backbone per camera')
    add('--lr_backbone', type=float,
        help='ACT/CNNMLP: learning rate of the backbone ' + _policy_default('lr_backbone', 'ACT'))
    add('--weight_decay', type=float, help='AdamW weight decay ' + _policy_default('weight_decay', 'ACT', 'Diffusion'))
    add('--backbone_weights', help='file of ImageNet backbone weights (default: the torch hub cache)')
    add('--pretrained_backbone', action=argparse.BooleanOptionalAction,
        help='start from ImageNet weights ' + _policy_default('pretrained_backbone', 'ACT', 'Diffusion'))
    add('--num_inference_steps', type=int, help='Diffusion: denoising steps per query '
        + _policy_default('num_inference_steps', 'Diffusion'))
    add('--scheduler', '--noise_scheduler_type', dest='scheduler', type=str.lower, choices=SCHEDULERS,
        help="Diffusion: the sampler (LeRobot's --noise_scheduler_type DDPM or DDIM; dpmsolver: DPM-Solver++, "
        'second-order multistep); all three share the training noise, so --eval and export_policy.py may sample '
        'a trained policy with another ' + _policy_default('scheduler', 'Diffusion'))
    add('--prediction_type', choices=PREDICTION_TYPES,
        help="Diffusion: what the UNet predicts, the noise or the clean action chunk; a training setting "
        + _policy_default('prediction_type', 'Diffusion'))
    add('--obs_horizon', '--n_obs_steps', dest='obs_horizon', type=int,
        help="Diffusion: observation steps per query (LeRobot's --n_obs_steps) "
        + _policy_default('obs_horizon', 'Diffusion'))
    add('--action_horizon', '--n_action_steps', dest='action_horizon', type=int,
        help="actions executed per query, without --temporal_agg (LeRobot's --n_action_steps) (default: ACT its "
        "whole chunk, as the original; Diffusion min(8, the actions a query returns))")
    add('--diffusion_style', choices=STYLES,
        help="Diffusion: act_plus_plus (act-plus-plus's network: 64 features per camera, the state after them, "
        "crop-rotate-jitter augmentation) or lerobot (LeRobot's: ReLU keypoint features, the state first, images "
        "standardised by their statistics and cut to --crop_shape, the chunk starting at the oldest observation, "
        "--n_action_steps counted from the current one; a LeRobot checkpoint's style) "
        + _policy_default('style', 'Diffusion'))
    add('--crop_shape', type=int, nargs=2, metavar=('H', 'W'),
        help='Diffusion, lerobot style: the window of each image the trunk sees, random in training and the centre '
        'in evaluation (default: the whole image)')
    add('--down_dims', type=int, nargs='+', metavar='C',
        help='Diffusion: channels of the UNet levels, finest first (a smaller UNet trains faster on a CPU) '
        + _policy_default('down_dims', 'Diffusion'))
    add('--augment_images', action=argparse.BooleanOptionalAction,
        help='Diffusion: random crop, rotation and colour jitter in training, the centre crop in evaluation '
        + _policy_default('augment_images', 'Diffusion'))


def _training_flags(parser):
    add = parser.add_argument
    add('--device', default='auto', help='auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps')
    for name in ('amp', 'grad_accum', 'lr_schedule', 'warmup_steps', 'num_steps', 'validate_every', 'save_every',
                 'resume'):
        add(f'--{name}', **TrainSettings.flag_spec(name))
    add('--resume_any_data', action='store_true', help='with --resume: go on although the data (episode files, '
        'sizes, statistics) changed; normalisation keeps the dataset_stats.pkl in --ckpt_dir')
    add('--save_format', **TrainSettings.flag_spec('save_format'))
    add('--init_from', metavar='PATH', **TrainSettings.flag_spec('init_from'))
    for name in ('keep_init_stats', 'freeze_backbone', 'gradient_checkpointing', 'clip_grad_norm', 'wandb',
                 'tensorboard'):
        add(f'--{name}', **TrainSettings.flag_spec(name))


def _evaluation_flags(parser):
    add = parser.add_argument
    add('--num_rollouts', type=int, default=50, help='evaluation rollouts')
    add('--eval_ckpt', default=BEST_CKPT, help='checkpoint in --ckpt_dir to evaluate')
    add('--eval_offline', action='store_true', help='compare the checkpoint\'s action chunks with recorded '
        'episodes instead of rolling out: the run\'s validation episodes, or --dataset_dir\'s; writes '
        'offline_eval.json and offline_eval.png')
    add('--diversity_samples', type=int, help='--eval_offline: chunks drawn per observation for the action '
        f'diversity (default: {DIFFUSION_SAMPLES} for Diffusion, none for the deterministic ACT and CNNMLP)')
    add('--stats_from', metavar='DATASET', help='evaluation: normalise with the statistics of this episodes folder '
        '(for a checkpoint that lacks its own, such as a LeRobot folder without normaliser files)')
    add('--no_video', action='store_true', help='evaluation: do not write video{i}.mp4')
    add('--eval_workers', type=int, default=1, help='evaluation: parallel rollout processes')
    add('--runtime', choices=('torch', *ENGINES), default='torch', help='evaluation: run the '
        'policy in torch, or its ONNX export through policy_runtime.PolicyRunner on onnxruntime or OpenVINO '
        '(exported to --ckpt_dir/export_<checkpoint> when --export_dir is not given)')
    add('--export_dir', help='--runtime onnxruntime/openvino: the folder export_policy.py wrote (e.g. an int8 export)')
    add('--robot_backend', choices=ROBOT_BACKENDS, default='builtin',
        help='real robot: our drivers or the aloha_scripts/ROS stack')
    add('--robot_driver', choices=ROBOT_DRIVERS, default='auto',
        help='real robot, builtin backend: how to reach the arms (feetech: SO-100/SO-101 tasks, which auto picks)')
    _execution_flags(parser)


def _execution_flags(parser):
    add = parser.add_argument
    add('--inference_delay', type=int, metavar='D', help='simulation: asynchronous execution, the chunk requested '
        'at step t usable from step t + D (deterministic; default: synchronous, the original\'s)')
    add('--realtime', action='store_true', help='simulation: asynchronous execution, each chunk usable after '
        'the inference time this machine really takes (ceil(seconds x control rate) steps)')
    add('--execution', choices=STRATEGIES, help='with --inference_delay or --realtime: how a new chunk joins the '
        'queued actions: replace them, ensemble every prediction for a step (weights exp(-0.01 i), i = 0 the '
        'oldest), or rtc (Diffusion: Real-Time Chunking, the denoising guided so that the new chunk starts as the '
        'queued actions go on, then replace) (default: ensemble)')
    add('--max_guidance_weight', type=float, metavar='BETA', help='with --execution rtc: the ceiling of the '
        f'guidance weight (default: {MAX_GUIDANCE_WEIGHT:g}, the RTC paper\'s)')
    add('--queue_threshold', type=int, metavar='N', help='with --inference_delay or --realtime: request a chunk '
        'when N actions or fewer are queued (default: the chunk size for ensemble, half of it for replace and rtc)')
