"""Writing files so that nothing a user made is lost, and reading shared files without running code.

Every file this project writes goes through `atomic_path` or `atomic_file`: a hidden temporary
file beside the target (`.{name}.{pid}.tmp{ext}`), flushed to disk and renamed over the target when
complete, removed when anything fails, so an interrupted write never leaves a truncated file. A run
removes the temporaries that killed runs left in its folders (`remove_stale_temps`). A full disk
ends in `DiskFull`, naming the file and the space it needed; libraries that crash when a write
fails (HDF5) or hide the cause (torch.save) write through `GuardedFile`, which lets them finish and
reports the failure afterwards.

Pickles and torch files that users share are read with restricted unpicklers: `load_stats_pickle`
admits only the numpy arrays and numbers of a dataset_stats.pkl, `load_torch_file` only tensors and
plain containers; anything else is refused with an error, never executed. `save_safetensors`
writes policy weights with no pickle at all (--save_format safetensors); `load_torch_file` reads
them. This module imports torch and safetensors only inside functions, so the viewer and the replay
script stay light.
"""
import contextlib
import errno
import io
import json
import os
import pickle
import re
import shutil
import tempfile

import numpy as np

from common.processes import process_alive

### File settings
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a write failed for want of space
TEMP_NAME = re.compile(r'^\.(?P<stem>.+)\.(?P<pid>\d+)\.tmp(?P<ext>\.[^.]*)?$')  # what temp_path makes
# The globals a dataset_stats.pkl may name: numpy arrays, dtypes and scalars (numpy 1 and 2 module names).
STATS_PICKLE_GLOBALS = {(module, name) for module in ('numpy.core.multiarray', 'numpy._core.multiarray')
                        for name in ('_reconstruct', 'scalar')} | {('numpy', 'ndarray'), ('numpy', 'dtype'),
                                                                   ('_codecs', 'encode')}  # bytes in protocol 2


class DiskFull(OSError):
    """A write failed for want of space; the message names the file and the space it needed."""


class UnsafeFile(ValueError):
    """A shared file holds objects that could run code when loaded; it was refused unread."""


############################ Atomic writes ############################

def inside_folder(folder, relative, source, key, error=UnsafeFile):
    """`relative`, a path that file `source` gives under `key`, when it resolves inside `folder`;
    otherwise `error` naming the file and the key (a data file never points outside its folder)."""
    base = os.path.realpath(folder)
    full = os.path.realpath(os.path.join(base, relative))
    if os.path.isabs(relative) or os.path.commonpath([base, full]) != base:
        raise error(f'{source}: {key} {relative!r} points outside {folder}; refused (a file of the folder is '
                    f'expected)')
    return relative


def temp_path(path):
    """Hidden name beside `path` with the same extension (writers such as ffmpeg pick the format
    from it); never matched by `episode_*.hdf5`."""
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f'.{stem}.{os.getpid()}.tmp{ext}')


def remove_stale_temps(folder):
    """Delete the temporary files that killed writers (processes no longer running) left in
    `folder`; a live process's are left alone. Returns the paths removed."""
    if not os.path.isdir(folder):
        return []
    removed = []
    for name in os.listdir(folder):
        match = TEMP_NAME.match(name)
        if match and int(match['pid']) != os.getpid() and not process_alive(int(match['pid'])):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
    return removed


# torch's words for a pickle global its weights-only loader refused (they vary with its release)
REFUSED_GLOBAL = r'allowed global|allowlisted|unsupported GLOBAL|is blocked'
TORCH_ADVICE = r'weights_only|Weights only load failed|torch\.load'  # sentences that advise loading unsafely
STAGING_MARKER = '.act_staging'  # inside every staging folder this project builds a result in, and nowhere else
LOCK_SUFFIX = '.lock'  # <folder>.lock: the PID of the one process writing the folder


def make_staging(path, result):
    """An empty staging folder at `path`, where `result` is built before it is renamed into place.
    A leftover of this project's (its marker inside) is cleared; a folder of someone else's is refused."""
    if os.path.lexists(path):
        if not os.path.isfile(os.path.join(path, STAGING_MARKER)):
            raise FileExistsError(f'{path} exists and is not a staging folder of this project, which builds {result} '
                                  f'there first: move it away (nothing in it was touched)')
        shutil.rmtree(path)
    os.makedirs(path)
    open(os.path.join(path, STAGING_MARKER), 'w').close()
    return path


def is_staging(path):
    return os.path.isfile(os.path.join(path, STAGING_MARKER))


def publish_staging(path, target):
    """Rename the complete staging folder `path` to `target` (which must not exist or be empty), unmarked."""
    os.remove(os.path.join(path, STAGING_MARKER))
    if os.path.isdir(target) and not os.listdir(target):
        os.rmdir(target)
    os.replace(path, target)


def drop_staging(path):
    """Remove the staging folder `path` when it is this project's; anything else is left alone."""
    if is_staging(path):
        shutil.rmtree(path, ignore_errors=True)


class FolderBusy(ValueError):
    """Another living process holds the lock of a folder this process would write (the message names it)."""


def lock_holder(path):
    """The PID of the living process other than this one that holds `path`'s lock, or None."""
    try:
        with open(path.rstrip(os.sep) + LOCK_SUFFIX) as f:
            pid = int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid and pid != os.getpid() and process_alive(pid) else None


class FolderLock:
    """An exclusive lock on the folder `path` for this process: `<path>.lock` holding its PID, created
    atomically. Refused naming the holder while it lives; taken over when its holder is dead (killed)."""

    def __init__(self, path):
        self.path, self.file = path, path.rstrip(os.sep) + LOCK_SUFFIX

    def __enter__(self):
        for _ in range(2):  # a second try after clearing a dead holder's lock
            try:
                fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = lock_holder(self.path)
                if holder is not None:
                    raise FolderBusy(f'{self.path} is being written by process {holder} (lock {self.file}): '
                                     f'let it finish first') from None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.file)
                continue
            with os.fdopen(fd, 'w') as f:
                f.write(str(os.getpid()))
            return self
        raise FolderBusy(f'{self.path}: could not take its lock {self.file}; try again')

    def __exit__(self, *exc):
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.file)


def prepare_folder(folder, flag):
    """Create `folder` (the value of command-line flag `flag`), make sure files can be written
    there and remove the stale temporaries of killed runs; ValueError naming the flag if not."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f'{flag} {folder} is not a writable folder: {err.strerror or err}') from None
    for path in remove_stale_temps(folder):
        print(f'Removed {path}, left by an interrupted run')


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full_error(err, path, needed=None):
    """DiskFull for `path` from the OSError of a failed write: its cause, the space needed, the space free."""
    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free
    need = f'needed about {needed / 1e6:.0f} MB, ' if needed else ''
    return DiskFull(err.errno, f'{os.strerror(err.errno).lower()}: {path} ({need}{free / 1e6:.0f} MB free); '
                               f'earlier files are intact')


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path to write `path` through: on success it is synced and renamed over
    `path` (the previous file stays intact until then); on any failure it is removed. A write that
    fails for want of space raises DiskFull."""
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(err, OSError) and not isinstance(err, DiskFull) and err.errno in FULL_ERRNOS:
            raise disk_full_error(err, path) from None
        raise


class GuardedFile(io.RawIOBase):
    """A read-write binary file whose writes never fail: the first failure is kept in `.error`
    and later writes are skipped, so a library that cannot recover from a failed write (HDF5
    crashes) finishes cleanly. `.size` is the size the complete file would have."""

    def __init__(self, raw):
        super().__init__()
        self.raw, self.error, self.size = raw, None, 0

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, pos, whence=io.SEEK_SET):
        return self.raw.seek(pos, whence)

    def tell(self):
        return self.raw.tell()

    def readinto(self, buffer):
        return self.raw.readinto(buffer)

    def write(self, data):
        view = memoryview(data).cast('B')
        done = 0
        while self.error is None and done < len(view):  # a write near the limit can be partial
            try:
                done += self.raw.write(view[done:])
            except OSError as err:
                self.error = err
        if done < len(view):
            self.raw.seek(len(view) - done, io.SEEK_CUR)
        self.size = max(self.size, self.raw.tell())
        return len(view)

    def truncate(self, size=None):
        if self.error is None:
            try:
                return self.raw.truncate(size)
            except OSError as err:
                self.error = err
        return self.raw.tell() if size is None else size

    def flush(self):
        if self.error is None:
            try:
                self.raw.flush()
            except OSError as err:
                self.error = err


@contextlib.contextmanager
def atomic_file(path):
    """Yield a GuardedFile (binary, read-write) to write `path` through atomically; a write that
    failed raises DiskFull (or the OSError) once the writer is done, with `path` untouched."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb+', buffering=0) as raw:
            guarded = GuardedFile(raw)
            yield guarded
            guarded.flush()
        if guarded.error is not None:
            if guarded.error.errno in FULL_ERRNOS:
                raise disk_full_error(guarded.error, path, guarded.size)
            raise guarded.error


def atomic_write(path, write, mode='wb'):
    """Write `path` atomically with write(file), the file opened in `mode` ('wb' or 'w')."""
    with atomic_file(path) as guarded:
        if mode == 'w':  # text files are small: composed in memory, written as UTF-8
            text = io.StringIO()
            write(text)
            guarded.write(text.getvalue().encode('utf-8'))
        else:
            write(guarded)


############################ Restricted loading ############################

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
