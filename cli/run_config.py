"""From the flags of imitate_episodes.py to the settings a run reads: the policy config, the config
dict train_bc and eval_bc take, and for an evaluation the values config.json saved (flags given win)."""
import os
import warnings

import torch

from checkpoints.folder import CONFIG_FILE, STATS_FILE
from checkpoints.reader import open_checkpoint
from cli.flags import CKPT_ROOT, UsageError, build_parser, policy_flags
from constants import IMAGE_HW
from evaluation.execution import Execution
from evaluation.settings import EvalSettings
from formats.normalize import Normalizer
from policies.registry import get_policy_class, policy_names
from tasks import canonical_task_name, control_hz, get_task_config
from training.settings import TrainSettings

RUN_FLAGS = ('policy_class', 'task_name', 'camera_names', 'image_size')  # also read back from config.json
EVAL_FLAGS = ('ckpt_dir', 'policy_class', 'onscreen_render', 'task_name', 'temporal_agg', 'num_rollouts', 'eval_ckpt',
              'eval_workers', 'robot_backend', 'robot_driver', 'stats_from', 'runtime', 'export_dir')


def with_default_folder(args):
    """args with the task's long name and, when --ckpt_dir is left out, CKPT_ROOT/<task_name>
    (printed); a UsageError when neither --ckpt_dir nor --task_name is given."""
    args = dict(args)
    if args.get('task_name'):
        args['task_name'] = canonical_task_name(args['task_name'])
    if args.get('ckpt_dir'):
        return args
    if not args.get('task_name'):
        raise UsageError('--ckpt_dir or --task_name required (the checkpoint folder defaults to '
                         f'{CKPT_ROOT}/<task_name>)')
    args['ckpt_dir'] = os.path.join(CKPT_ROOT, args['task_name'])
    print(f'--ckpt_dir {args["ckpt_dir"]} (the default for --task_name {args["task_name"]})')
    return args


def pick_device(name, local_rank=0):
    """'auto' -> cuda (this process's GPU under torchrun), else mps, else cpu; other names pass through."""
    if name != 'auto':
        return name
    if torch.cuda.is_available():
        return f'cuda:{local_rank}'
    if torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def make_policy_config(args, camera_names, state_dim, action_dim, image_hw, base=None):
    """The complete policy config from the flags; flags left out (None) take the policy's defaults.
    image_hw (H, W) is the size of the images the policy sees (CNNMLP's MLP input depends on it).
    base: a checkpoint's policy_config (--init_from) whose settings without a flag are kept."""
    cls = get_policy_class(args['policy_class'])
    flagged = set(policy_flags().values())
    config = {key: value for key, value in (base or {}).items() if key in cls.defaults and key not in flagged}
    config.update({key: args[flag] for flag, key in policy_flags().items()
                   if key in cls.defaults and args.get(flag) is not None})
    config.update({key: cls.defaults[key] for key in cls.required if key not in config and key in cls.defaults})
    config.update(camera_names=list(camera_names), state_dim=state_dim, action_dim=action_dim)
    config.update(cls.settings_for_images(image_hw))
    return cls.resolve_config(config)


def make_config(args, task_config, policy_config, device):
    """The config dict train_bc and eval_bc read (the original's keys plus the new ones)."""
    return {
        **{k: args[k] for k in TrainSettings.names('flag') + EVAL_FLAGS},
        'episode_len': task_config['episode_len'], 'policy_config': policy_config, 'lr': policy_config['lr'],
        'state_dim': policy_config['state_dim'], 'action_dim': policy_config['action_dim'],
        'camera_names': policy_config['camera_names'], 'real_robot': args['task_name'][:4] != 'sim_',
        'device': device, 'image_size': tuple(args['image_size']) if args['image_size'] else None,
        'save_video': not args['no_video'],
        'execution': execution_settings(args, task_config),
    }


def execution_settings(args, task_config):
    """The asynchronous execution --inference_delay / --realtime ask for, or None (synchronous);
    a UsageError for flags that cannot go together."""
    delayed = args.get('inference_delay') is not None or args.get('realtime')
    if not delayed:
        given = [f'--{flag}' for flag in ('execution', 'queue_threshold', 'max_guidance_weight')
                 if args.get(flag) is not None]
        if given:
            raise UsageError(f'{" and ".join(given)} set the asynchronous execution: give --inference_delay D '
                             f'or --realtime too')
        return None
    if args.get('inference_delay') is not None and args.get('realtime'):
        raise UsageError('--inference_delay D and --realtime both set the delay: give one')
    if args.get('temporal_agg'):
        raise UsageError('--temporal_agg is synchronous ensembling; with --inference_delay or --realtime use '
                         '--execution ensemble')
    if args.get('runtime', 'torch') != 'torch':
        raise UsageError('--inference_delay and --realtime execute the torch policy asynchronously (not --runtime '
                         'onnxruntime/openvino; PolicyRunner.realtime() runs an export so)')
    if args['task_name'][:4] != 'sim_' and args.get('inference_delay') is not None:
        raise UsageError('--inference_delay D simulates a delay; on a real robot the delay is real: use --realtime')
    strategy = args.get('execution') or 'ensemble'
    if strategy == 'rtc' and not get_policy_class(args['policy_class']).samples:
        raise UsageError(f"--execution rtc guides a Diffusion policy's denoising; {args['policy_class']} "
                         f"executes with replace or ensemble")
    guidance = {}
    if args.get('max_guidance_weight') is not None:
        if strategy != 'rtc':
            raise UsageError("--max_guidance_weight is the ceiling of --execution rtc's guidance: "
                             "give --execution rtc")
        guidance['max_guidance_weight'] = args['max_guidance_weight']
    return Execution(strategy=strategy, threshold=args.get('queue_threshold'),
                     delay_steps=args.get('inference_delay'), realtime=bool(args.get('realtime')),
                     control_hz=float(control_hz(task_config)), **guidance)


def check_args(args, device):
    """Raise for settings that cannot go together (the flags' ranges are checked first, flags.flag_problem)."""
    if args['policy_class'] not in policy_names():
        raise UsageError(f"--policy_class must be one of {', '.join(policy_names())}, got {args['policy_class']!r}")
    if args.get('keep_init_stats') and not args.get('init_from'):
        raise ValueError('--keep_init_stats takes the statistics of --init_from\'s checkpoint: give --init_from')
    if args['amp'] == 'fp16' and not device.startswith('cuda'):
        raise ValueError(f'--amp fp16 needs a CUDA device (got {device}); use --amp bf16 on this device')
    if args['amp'] == 'bf16' and device == 'cpu' and not cpu_has_bf16():
        warnings.warn('--amp bf16: this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), so bf16 '
                      'runs emulated and much slower than --amp off')


def cpu_has_bf16():
    checks = [getattr(torch.cpu, name, None) for name in ('_is_avx512_bf16_supported', '_is_amx_tile_supported')]
    return any(check() for check in checks if check is not None)


def evaluating(args):
    return bool(args['eval'] or args.get('eval_offline'))


def run_checkpoint(args):
    """The checkpoint folder an evaluation reads (checkpoints.reader), opened once; a UsageError for
    a config.json that cannot be read."""
    try:
        return open_checkpoint(args['ckpt_dir'])
    except (KeyError, ValueError) as err:
        raise UsageError(str(err.args[0])) from None


def check_required(args, checkpoint=None):
    """A UsageError naming required flags that are absent. --eval and --eval_offline read them from
    the config of `checkpoint` (the opened --ckpt_dir)."""
    missing = [f'--{flag}' for flag in ('policy_class', 'task_name') if args.get(flag) is None]
    if not missing or (checkpoint is not None and checkpoint.config is not None):
        return
    where = f' (or a config.json in --ckpt_dir {args["ckpt_dir"]}, which training writes)' if evaluating(args) else ''
    raise UsageError(f'{" and ".join(missing)} required{where}')


def with_saved_config(args, saved, path, run_flags=RUN_FLAGS):
    """args with each of run_flags and each model flag left out taken from config.json; a printed
    note for each given flag that overrides a saved value."""
    values = {flag: saved.get(flag) for flag in run_flags}
    values.update({flag: saved['policy_config'][key] for flag, key in policy_flags().items()
                   if key in saved['policy_config']})
    merged = dict(args)
    for flag, value in values.items():
        given = args.get(flag)
        if given is None:
            merged[flag] = value
        elif value is not None and _comparable(given) != _comparable(value):
            print(f'--{flag} {given} overrides {flag} = {value} from {path}')
    return merged


def _comparable(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def eval_config(args, device, checkpoint=None):
    """The evaluation config: from config.json when the folder has one (flags given still win),
    else from the flags and dataset_stats.pkl, as the original. checkpoint: the opened --ckpt_dir."""
    checkpoint = checkpoint or run_checkpoint(args)
    saved = checkpoint.config
    if saved is None:
        task_config = get_task_config(args['task_name'])
        state_dim, action_dim = dims_from_stats(args['ckpt_dir'], args['policy_class'])
        image_hw = args['image_size'] or IMAGE_HW
        camera_names = args['camera_names'] or task_config['camera_names']
        policy_config = make_policy_config(args, camera_names, state_dim, action_dim, image_hw)
        return {**make_config(args, task_config, policy_config, device), 'checkpoint': checkpoint}
    args = with_saved_config(args, saved, os.path.join(args['ckpt_dir'], CONFIG_FILE))
    if args['task_name'] is None:
        raise UsageError(f"--task_name required: {args['ckpt_dir']} (a LeRobot checkpoint) names no task")
    flag_values = {key: args[flag] for flag, key in policy_flags().items() if args[flag] is not None}
    policy_config = {**saved['policy_config'], **flag_values, 'camera_names': args['camera_names']}
    if args['image_size']:
        policy_config.update(get_policy_class(args['policy_class']).settings_for_images(args['image_size']))
    config = make_config(args, get_task_config(args['task_name']), policy_config, device)
    config['shadows'] = saved.get('shadows', True)  # sim frames rendered as the training frames were
    config['checkpoint'] = checkpoint
    return config


def flags_eval_config(args, device):
    """--eval's and --eval_offline's config from imitate_episodes.py's flags (a dict): the default
    folder filled in, the checkpoint folder opened once, the required flags checked, settings that
    cannot go together refused."""
    args = with_default_folder(args)
    checkpoint = run_checkpoint(args)
    check_required(args, checkpoint)
    config = eval_config(args, device, checkpoint)
    check_args(config, device)
    return config


def dims_from_stats(ckpt_dir, policy_class):
    """(state_dim, action_dim) of a trained policy from its dataset_stats.pkl; the policy defaults
    without one (evaluation then stops with an error naming the missing file)."""
    path = os.path.join(ckpt_dir, STATS_FILE)
    if not os.path.isfile(path):
        defaults = get_policy_class(policy_class).defaults
        return defaults['state_dim'], defaults['action_dim']
    normalizer = Normalizer.load(path)
    return normalizer.state_dim, normalizer.action_dim


def checkpoint_settings(checkpoint, device='cpu'):
    """The EvalSettings the config.json of a checkpoint folder describes, as its run saved them (no
    command line): what an export of it takes."""
    saved = checkpoint.config
    task_name = saved['task_name']
    return EvalSettings(ckpt_dir=checkpoint.path, task_name=task_name, policy_class=saved['policy_class'],
                        policy_config=dict(saved['policy_config']), camera_names=list(saved['camera_names']),
                        episode_len=get_task_config(task_name)['episode_len'], real_robot=task_name[:4] != 'sim_',
                        image_size=tuple(saved['image_size']), shadows=saved.get('shadows', True), device=device,
                        checkpoint=checkpoint)


def export_settings(ckpt_dir, ckpt_name, model_flags, device='cpu'):
    """The EvalSettings export_policy.py exports with: config.json's as they are; with model flags given
    (a folder without config.json, the original's, or LeRobot's; or a setting changed, --scheduler)
    those of imitate_episodes.py --eval with them."""
    checkpoint = run_checkpoint({'ckpt_dir': ckpt_dir})
    if not model_flags and checkpoint.config is not None and checkpoint.config.get('task_name'):
        return checkpoint_settings(checkpoint, device)
    flags = vars(build_parser().parse_args(['--eval', '--ckpt_dir', ckpt_dir, '--eval_ckpt', ckpt_name,
                                            *model_flags]))
    return EvalSettings.of(flags_eval_config(flags, device))
