"""The flags of imitate_episodes.py: the original's first, then the data, model, training and
evaluation flags this project adds, and the checks of their values. Training settings take their
default and help from training.settings.TrainSettings."""
import argparse

from checkpoints.folder import BEST_CKPT
from deploy.engines import engine_names
from evaluation.offline import DIFFUSION_SAMPLES
from policies.executor import STRATEGIES
from policies.registry import get_policy_class, model_settings, policy_names
from policies.rtc import MAX_GUIDANCE_WEIGHT
from policies.settings import AT_LEAST_0, AT_LEAST_1, MORE_THAN_0
from real_robot.settings import ROBOT_BACKENDS, ROBOT_DRIVERS
from tasks import canonical_task_name, get_task_config, sim_task_names
from training.settings import TrainSettings

CKPT_ROOT = 'ckpt'  # --ckpt_dir defaults to CKPT_ROOT/<task_name>, relative to the working folder


class UsageError(ValueError):
    """A flag missing or out of its range: imitate_episodes.py answers with its usage line (exit 2)."""

# Numeric flags of the run (the model's are declared with their policies: policies/settings.py) -> their range
FLAG_RANGES = {
    **{flag: AT_LEAST_1 for flag in ('batch_size', 'num_epochs', 'num_steps', 'grad_accum', 'validate_every',
                                     'save_every', 'num_rollouts', 'eval_workers')},
    **{flag: AT_LEAST_0 for flag in ('warmup_steps', 'num_workers', 'diversity_samples', 'inference_delay',
                                     'queue_threshold')},
    'clip_grad_norm': MORE_THAN_0,
    'max_guidance_weight': MORE_THAN_0,
}


def policy_flags():
    """{flag: the policy_config key it sets} of every registered policy's settings; a flag left out takes
    the policy's default."""
    return {setting.flag: setting.key for setting, _ in model_settings()}


def flag_ranges():
    """{flag: Range} of the run's numeric flags and the policies' settings that have one."""
    return {**FLAG_RANGES, **{setting.flag: setting.range for setting, _ in model_settings() if setting.range}}


def task_name_arg(task_name):
    """argparse type of --task_name: the task a known name means, else a usage error listing them."""
    try:
        get_task_config(task_name)
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from e
    return canonical_task_name(task_name)


def flag_problem(args):
    """A message naming the first numeric flag out of its range (flag_ranges()), or None."""
    for flag, admitted in flag_ranges().items():
        problem = None if args.get(flag) is None else admitted.problem(flag, args[flag])
        if problem:
            return problem
    if args.get('image_size') and min(args['image_size']) < 1:
        return f"--image_size must be two positive integers H W, got {' '.join(map(str, args['image_size']))}"
    if args.get('policy_class') in policy_names():
        values = {key: args.get(flag) for flag, key in policy_flags().items()}  # policy_config key -> flag value
        return get_policy_class(args['policy_class']).settings_problem(values)
    return None


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
    _setting_flags(parser, original=True)
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
    _setting_flags(parser, original=False)


def _setting_flags(parser, original):
    """The flags of the policies' settings (policies/settings.py): the original's, or the others."""
    for setting, help_text in model_settings():
        if setting.original != original:
            continue
        names, spec = setting.argparse_spec()
        parser.add_argument(*names, help=help_text, **spec)
        if setting.off_alias:
            parser.add_argument(setting.off_alias, dest=setting.flag, action='store_false', default=argparse.SUPPRESS,
                                help=f"{setting.help.split(':')[0]}: --no-{setting.flag}")


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
    add('--runtime', choices=('torch', *engine_names()), default='torch', help='evaluation: run the '
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
