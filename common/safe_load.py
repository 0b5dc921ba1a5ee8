"""Reading files that users share without running code in them.

Pickles and torch files are read with restricted unpicklers: `load_stats_pickle` admits only the
numpy arrays and numbers of a dataset_stats.pkl, `load_torch_file` only tensors and plain
containers; anything else is refused with an error, never executed. `save_safetensors` writes policy
weights with no pickle at all (--save_format safetensors); `load_torch_file` reads them. `load_json`
reads a JSON file with a bounded nesting depth, so a crafted file is a message, not a crash. torch
and safetensors are imported only inside functions, so the viewer and the replay script stay light.
"""
import json
import os
import pickle
import re

import numpy as np

from common.files import atomic_write
from common.folders import UnsafeFile

# The globals a dataset_stats.pkl may name: numpy arrays, dtypes and scalars (numpy 1 and 2 module names).
STATS_PICKLE_GLOBALS = {(module, name) for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
                        for name in ('_reconstruct', 'scalar')} | {('numpy', 'ndarray'), ('numpy', 'dtype'),
                                                                   ('_codecs', 'encode')}  # bytes in protocol 2
# torch's words for a pickle global its weights-only loader refused (they vary with its release)
REFUSED_GLOBAL = r'allowed global|allowlisted|unsupported GLOBAL|is blocked'
TORCH_ADVICE = r'weights_only|Weights only load failed|torch\.load'  # sentences that advise loading unsafely
JSON_MAX_DEPTH = 100  # deepest nesting of lists and objects a JSON file users share may have
JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[][{}]')  # a JSON string, or a bracket that opens or closes


def json_depth_error(text, limit=JSON_MAX_DEPTH):
    """Where JSON text nests deeper than `limit` (brackets outside strings): 'nested more than N deep at
    character I', else None. Checked before parsing, so no parser recursion can exhaust the stack."""
    depth = 0
    for token in JSON_NESTING.finditer(text):  # strings are whole tokens: their brackets do not count
        bracket = token.group()
        if bracket in '[{':
            depth += 1
            if depth > limit:
                return f'nested more than {limit} deep at character {token.start()}'
        elif bracket in ']}':
            depth -= 1
    return None


def load_json(path, error=ValueError):
    """The value of the JSON file `path`; `error` naming the file when it is missing, unreadable, not
    JSON or nested deeper than JSON_MAX_DEPTH."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        raise error(f'{path}: missing') from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f'{path}: cannot be read ({getattr(err, "strerror", None) or err})') from None
    deep = json_depth_error(text)
    if deep:
        raise error(f'{path}: not a file this project reads (JSON {deep})')
    try:
        return json.loads(text)
    except ValueError as err:
        raise error(f'{path}: not valid JSON ({err})') from None


class _StatsUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in STATS_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafeFile(f'{module}.{name}')


def load_stats_pickle(path):
    """The dict a dataset_stats.pkl holds, read admitting only numpy arrays, dtypes and numbers."""
    try:
        with open(path, 'rb') as f:
            stats = _StatsUnpickler(f).load()
    except UnsafeFile as err:
        raise UnsafeFile(f'{path} refers to {err.args[0]}, which a dataset_stats.pkl never holds (only numpy '
                         f'arrays and numbers): it was refused unread, because loading it could run code') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f'{path} is not a readable dataset_stats.pkl (truncated or not a pickle: {err})') from None
    if not isinstance(stats, dict):
        raise ValueError(f'{path}: expected a dict of statistics, got {type(stats).__name__}')
    for key, value in stats.items():
        if np.asarray(value).dtype.kind not in 'biuf':
            raise ValueError(f'{path}: {key!r} holds {type(value).__name__} of {np.asarray(value).dtype}; '
                             f'expected numbers')
    return stats


def _numpy_globals():
    """numpy's uint32 array reconstruction (data only): training states of version 1.0.0 hold
    numpy's RNG state as an array."""
    core = getattr(np, '_core', None) or np.core  # numpy 2, numpy 1
    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), core.multiarray._reconstruct]


def save_safetensors(obj, path):
    """Write a state dict, or a dict of state dicts and plain values (the Diffusion policy's
    checkpoint), as a safetensors file atomically: tensors under '{key}' or '{entry}/{key}', the
    layout and the plain values in its metadata. No pickle anywhere."""
    from safetensors.torch import save
    if all(hasattr(v, 'shape') for v in obj.values()):
        tensors, metadata = dict(obj), {'layout': 'state_dict'}
    else:
        tensors = {f'{entry}/{k}': v for entry, sd in obj.items() if isinstance(sd, dict) for k, v in sd.items()}
        values = {entry: v for entry, v in obj.items() if not isinstance(v, dict)}
        metadata = {'layout': 'nested', 'values': json.dumps(values)}
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata)
    atomic_write(path, lambda f: f.write(data))


def _load_safetensors(path, map_location):
    """save_safetensors' object back."""
    from safetensors import safe_open
    with safe_open(path, framework='pt', device=str(map_location)) as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if metadata.get('layout') != 'nested':
        return tensors
    obj = json.loads(metadata.get('values', '{}'))
    for name, tensor in tensors.items():
        entry, key = name.split('/', 1)
        obj.setdefault(entry, {})[key] = tensor
    return obj


def load_torch_file(path, what='checkpoint', map_location='cpu'):
    """torch.load of a file users share, admitting only tensors, numpy arrays and plain Python
    values, or a safetensors file (save_safetensors); a clear error for an empty, truncated or
    foreign file, never advice to load unsafely."""
    import torch
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    if os.path.getsize(path) == 0:
        raise ValueError(f'{what} {path} is empty (0 bytes): an interrupted copy? Copy or train it again')
    try:
        if path.endswith('.safetensors'):
            return _load_safetensors(path, map_location)
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 (whatever a foreign or broken file makes torch raise)
        refused = isinstance(err, pickle.UnpicklingError) and re.search(REFUSED_GLOBAL, str(err))
        if refused:
            found = re.search(r'GLOBAL (\S+)', str(err))
            detail = f'refers to {found[1]}, ' if found else ''
            raise UnsafeFile(f'{what} {path} {detail}holds code or objects other than tensors and plain values, '
                             f'which this project does not load: it was refused unread') from None
        text = str(err).split('WeightsUnpickler error:')[-1].strip()
        lines = [line for line in text.splitlines() if line.strip() and not re.search(TORCH_ADVICE, line)]
        first_line = lines[0] if lines else type(err).__name__  # torch's advice to load unsafely left out
        raise ValueError(f'{what} {path} cannot be read as a torch file: truncated or not a checkpoint '
                         f'({first_line[:200]})') from None
