"""The random number generators: seeded together, and their states saved and restored (--resume)."""
import random

import numpy as np
import torch


def set_seed(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_states():
    """The RNG states as tensors and plain values (so the training state loads with weights_only=True)."""
    kind, keys, *rest = np.random.get_state()
    states = {'torch': torch.get_rng_state(), 'numpy': (kind, keys.tolist(), *rest), 'python': random.getstate()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    torch.set_rng_state(states['torch'])
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])
