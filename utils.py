"""The original's `utils` names, for scripts written against the original code.

The code lives in its own rooms: the episode file format in formats/hdf5.py, the statistics in
formats/stats.py, the data pipeline in training/data.py, the training helpers in training/loop.py
and common/seeds.py, the object-pose samplers in sim_env.py.
"""
from common.seeds import set_seed
from formats.stats import get_norm_stats
from training.data import EpisodicDataset, load_data
from training.loop import compute_dict_mean, detach_dict

__all__ = ['EpisodicDataset', 'get_norm_stats', 'load_data', 'compute_dict_mean', 'detach_dict', 'set_seed',
           'sample_box_pose', 'sample_insertion_pose']


def __getattr__(name):
    """The pose samplers, from sim_env (imported on first use: it loads MuJoCo)."""
    if name in ('sample_box_pose', 'sample_insertion_pose'):
        import sim_env
        return getattr(sim_env, name)
    raise AttributeError(f"module 'utils' has no attribute '{name}'")
