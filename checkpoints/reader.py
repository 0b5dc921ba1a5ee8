"""One reader for a checkpoint folder: this project's, the original's or LeRobot's.

`open_checkpoint(path)` decides once which kind a folder is and hands on one `Checkpoint`, which
every caller (evaluation, export, offline evaluation, --init_from, conversion) asks for what it
needs:
    'project'   config.json of this project beside the original's files (checkpoints/folder.py)
    'original'  the original's files alone: policy_*.ckpt and dataset_stats.pkl; the model
                settings come from the command line, as the original's
    'lerobot'   a LeRobot ACT or Diffusion pretrained_model/ folder (checkpoints/lerobot.py)
"""
import os
from dataclasses import dataclass

from checkpoints.folder import BEST_CKPT, CONFIG_FILE, STATS_FILE, checked_config, load_config_json, policy_file
from checkpoints.lerobot import lerobot_run_config, load_lerobot_weights, read_lerobot_checkpoint, read_lerobot_config
from checkpoints.lerobot_files import MODEL_FILE, feature_listing, is_lerobot_config, statistics_from_lerobot
from common.safe_load import load_torch_file
from formats.datasets import open_dataset
from formats.normalize import Normalizer
from formats.stats import get_norm_stats
from policies.registry import checkpoint_policy_class, get_policy_class, make_policy

KINDS = ('project', 'original', 'lerobot')


def open_checkpoint(path):
    """The checkpoint folder at `path`, its config.json read once and its kind decided here."""
    config_path, config = load_config_json(path)
    if config is None:
        return Checkpoint(path, 'original')
    if is_lerobot_config(config):
        return Checkpoint(path, 'lerobot', lerobot_run_config(path, config))
    return Checkpoint(path, 'project', checked_config(config, config_path))


@dataclass(frozen=True)
class Checkpoint:
    """An opened checkpoint folder: `kind` (KINDS) and `config`, the run config of config.json
    (checkpoints.folder.make_run_config's keys; None for the original's folders)."""
    path: str
    kind: str
    config: dict = None

    def weights_file(self, ckpt_name):
        """The file the weights of checkpoint `ckpt_name` are read from (a LeRobot folder's model.safetensors)."""
        path = policy_file(self.path, ckpt_name)
        if self.kind == 'lerobot' and not os.path.isfile(path):
            return os.path.join(self.path, MODEL_FILE)
        return path

    def policy(self, policy_class, policy_config, ckpt_name=BEST_CKPT, device='cpu', task_name=None):
        """The policy built from policy_config with the checkpoint's weights, on `device`, in eval mode."""
        ckpt_path = policy_file(self.path, ckpt_name)
        if self.kind == 'lerobot' and not os.path.isfile(ckpt_path):
            return self._lerobot_policy(policy_config, device)
        if not os.path.isfile(ckpt_path):
            raise FileNotFoundError(f'checkpoint not found: {ckpt_path}; train one first: '
                                    f'{self._train_command(policy_class, task_name)} or pick another checkpoint '
                                    f'with --eval_ckpt')
        # the checkpoint replaces the initial weights: no ImageNet trunk is fetched
        policy = make_policy(policy_class, policy_config, load_pretrained=False)
        state = load_torch_file(ckpt_path, 'checkpoint', map_location=device)
        written_by = checkpoint_policy_class(state)
        if written_by is not None and written_by != policy_class:
            raise ValueError(f'{ckpt_path} holds a {written_by} policy but the policy class is {policy_class}: '
                             f'pass --policy_class {written_by} (config.json in --ckpt_dir names the class it trained)')
        try:
            policy.deserialize(state)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f'{ckpt_path} does not match the {policy_class} policy built from the '
                             f'given flags (chunk size, state/action size, model size must be those used '
                             f'for training): {e}') from e
        return policy.to(device).eval()

    def _lerobot_policy(self, policy_config, device):
        """The policy of a LeRobot pretrained_model/ folder, its features' roles printed."""
        checkpoint = read_lerobot_checkpoint(self.path, statistics=False)
        policy_class = checkpoint['policy_class']
        print(f'LeRobot {policy_class} checkpoint {self.path}: {feature_listing(checkpoint["features"])}')
        policy = make_policy(policy_class, policy_config, load_pretrained=False)
        load_lerobot_weights(policy, checkpoint)
        return policy.to(device).eval()

    def normalizer(self, policy_class, policy_config, stats_from=None, task_name=None):
        """The Normalizer the policy was trained with, checked against its sizes; stats_from: a
        dataset folder (episode files or LeRobot) whose statistics stand in for the checkpoint's."""
        cls = get_policy_class(policy_class)
        if stats_from:
            return Normalizer(get_norm_stats(open_dataset(stats_from)), cls.action_normalization, source=stats_from)
        stats_path = os.path.join(self.path, STATS_FILE)
        if self.kind == 'lerobot' and not os.path.isfile(stats_path):
            stats = statistics_from_lerobot(self.path, read_lerobot_config(self.path))[0]
            return Normalizer(stats, cls.action_normalization, source=self.path)
        if not os.path.isfile(stats_path):
            raise FileNotFoundError(f'dataset statistics not found: {stats_path}; training writes it: '
                                    f'{self._train_command(policy_class, task_name)}')
        normalizer = Normalizer.load(stats_path, cls.action_normalization)
        cfg = cls.resolve_config(policy_config)
        normalizer.check_sizes(cfg['state_dim'], cfg['action_dim'], stats_path)
        return normalizer

    def pretrained(self, ckpt_name=BEST_CKPT, source=None):
        """What --init_from starts from: {'policy_class', 'policy_config', 'state_dict', 'stats', 'source'};
        'stats' the dataset_stats dict, or None when the folder has none."""
        source = source or self.path
        if self.kind == 'lerobot':
            checkpoint = read_lerobot_checkpoint(self.path)
            return {'policy_class': checkpoint['policy_class'], 'policy_config': checkpoint['policy_config'],
                    'state_dict': checkpoint['state_dict'], 'stats': checkpoint['stats'], 'source': source}
        if self.kind == 'original':
            raise ValueError(f'--init_from {source}: {os.path.join(self.path, CONFIG_FILE)} not found; a checkpoint '
                             f'folder of this project (config.json beside the policy files) or a LeRobot '
                             f'pretrained_model/ folder is expected')
        state_dict = load_torch_file(policy_file(self.path, ckpt_name), 'checkpoint')
        stats_path = os.path.join(self.path, STATS_FILE)
        stats = Normalizer.load(stats_path).stats if os.path.isfile(stats_path) else None
        return {'policy_class': self.config['policy_class'], 'policy_config': self.config['policy_config'],
                'state_dict': state_dict, 'stats': stats, 'source': source}

    def _train_command(self, policy_class, task_name):
        return (f"python imitate_episodes.py --task_name {task_name} --ckpt_dir {self.path} "
                f"--policy_class {policy_class} ... (the flags used for training, without --eval)")


def read_pretrained(path):
    """--init_from PATH: a checkpoint folder (its policy_best), one of its policy files, or a LeRobot
    pretrained_model/ folder -> Checkpoint.pretrained's dict."""
    if os.path.isdir(path):
        return open_checkpoint(path).pretrained(source=path)
    folder, name = os.path.split(path)
    return open_checkpoint(folder).pretrained(name, source=path)
