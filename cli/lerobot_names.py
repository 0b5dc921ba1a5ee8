"""LeRobot's command-line names (`lerobot-train --policy.chunk_size=100 ...`) accepted by
imitate_episodes.py: each becomes the flag of ours that sets the same thing, said once at the start.
`--batch_size`, `--seed` and `--num_workers` are the same names in both.

Where LeRobot's default differs from the original's (one decoder layer, lr 1e-5 for the trunk as
well), the default here stays the original's: only the names given are translated.
"""
import os

from cli.flags import UsageError
from policies.chunker import TEMPORAL_AGG_K
from policies.registry import lerobot_types, model_settings

LEROBOT_HOME = os.environ.get('HF_LEROBOT_HOME', os.path.expanduser('~/.cache/huggingface/lerobot'))
NOISE_SCHEDULERS = ('ddpm', 'ddim')  # LeRobot's noise_scheduler_type values, in capitals there
# LeRobot name -> our flag (the value passes as it is); the policies' settings add theirs (setting_names())
SAME_VALUE = {
    '--steps': '--num_steps', '--save_freq': '--save_every', '--output_dir': '--ckpt_dir',
    '--dataset.root': '--dataset_dir', '--policy.path': '--init_from',
}
SWITCHES = {'--wandb.enable': ('--wandb', None)}  # LeRobot name -> (our flag when true, when false)
PREFIXES = ('--policy.', '--dataset.', '--wandb.', '--training.', '--optimizer.', '--scheduler.', '--eval.', '--env.')


def truth(name, value):
    if value.lower() in ('true', '1', 'yes'):
        return True
    if value.lower() in ('false', '0', 'no'):
        return False
    raise UsageError(f'{name} {value}: true or false expected')


def setting_names():
    """{LeRobot name: (our flag, its ModelSetting)} of the policies' settings (policies/settings.py)."""
    return {lerobot: (f'--{setting.flag}', setting) for setting, _ in model_settings() for lerobot in setting.lerobot}


def translate_setting(name, value, flag, setting):
    """A LeRobot name of one of the policies' settings -> our flags: the value as it is, a switch's true or
    false, or a list of sizes ([84, 84])."""
    if setting.switch:
        return [flag] if truth(name, value) else ([f'--no-{setting.flag}'] if setting.switch == 'both' else [])
    if setting.nargs is None:
        return [flag, value]
    count = setting.nargs if isinstance(setting.nargs, int) else None
    sizes = value.strip('[]() ').replace(',', ' ').split()
    if not sizes or (count and len(sizes) != count) or not all(n.isdigit() for n in sizes):
        raise UsageError(f'{name} {value}: {count or "one or more"} whole numbers expected, as [84, 84]')
    return [flag, *sizes]


def translate_one(name, value):
    """(LeRobot name, value) -> our flags (a list)."""
    if name in SAME_VALUE:
        return [SAME_VALUE[name], value]
    settings = setting_names()
    if name in settings:
        return translate_setting(name, value, *settings[name])
    if name in SWITCHES:
        on, off = SWITCHES[name]
        return [on] if truth(name, value) else ([off] if off else [])
    if name == '--policy.type':
        types = lerobot_types()
        if value not in types:
            raise UsageError(f'--policy.type {value}: this project trains {", ".join(types)} (LeRobot names)')
        return ['--policy_class', types[value]]
    if name == '--policy.noise_scheduler_type':
        if value.lower() not in NOISE_SCHEDULERS:
            raise UsageError(f'{name} {value}: LeRobot\'s are {" and ".join(s.upper() for s in NOISE_SCHEDULERS)} '
                             f'(here also --scheduler dpmsolver)')
        return ['--scheduler', value.lower()]
    if name == '--policy.use_amp':
        return ['--amp', 'fp16'] if truth(name, value) else []  # LeRobot's automatic mixed precision
    if name == '--policy.temporal_ensemble_coeff':
        if value.lower() in ('none', 'null'):
            return []
        if float(value) != TEMPORAL_AGG_K:
            raise UsageError(f'{name} {value}: temporal ensembling here has the original\'s weight '
                             f'{TEMPORAL_AGG_K} only (--temporal_agg)')
        return ['--temporal_agg']
    if name == '--dataset.repo_id':
        folder = os.path.join(LEROBOT_HOME, value)
        if not os.path.isdir(folder):
            raise UsageError(f'--dataset.repo_id {value}: no local dataset at {folder} (nothing is downloaded: '
                             f'put the dataset there, set HF_LEROBOT_HOME, or give --dataset.root DIR)')
        return ['--dataset_dir', folder]
    raise UsageError(f'{name}: a LeRobot setting this project has no counterpart for (docs/lerobot.md lists '
                     f'the ones it takes)')


def translate_lerobot_flags(argv):
    """argv with LeRobot's names (`--key=value` or `--key value`) replaced by ours -> (argv, the
    lines that say what became what)."""
    out, said, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        name, _, value = token.partition('=')
        if not (name.startswith(PREFIXES) or name in SAME_VALUE):  # --batch_size, --seed, ... are ours too
            out.append(token)
            i += 1
            continue
        if not _:
            if i + 1 >= len(argv):
                raise UsageError(f'{name}: a value expected')
            value, i = argv[i + 1], i + 1
        ours = translate_one(name, value)
        said.append(f'{name}={value} -> {" ".join(ours) or "(the default)"}')
        out += ours
        i += 1
    return out, said
