"""Writing files so that nothing a user made is lost.

Every file this project writes goes through `atomic_path` or `atomic_file`: a hidden temporary
file beside the target (`.{name}.{pid}.tmp{ext}`), flushed to disk and renamed over the target when
complete, removed when anything fails, so an interrupted write never leaves a truncated file. A run
removes the temporaries that killed runs left in its folders (`remove_stale_temps`). A full disk
ends in `DiskFull`, naming the file and the space it needed; libraries that crash when a write
fails (HDF5) or hide the cause (torch.save) write through `GuardedFile`, which lets them finish and
reports the failure afterwards. Folders built and published whole, and their locks, are in
common.folders; reading shared files without running code in common.safe_load.
"""
import contextlib
import errno
import io
import os
import re
import shutil
import tempfile

from common.processes import process_alive

### File settings
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a write failed for want of space
TEMP_NAME = re.compile(r'^\.(?P<stem>.+)\.(?P<pid>\d+)\.tmp(?P<ext>\.[^.]*)?$')  # what temp_path makes


class DiskFull(OSError):
    """A write failed for want of space; the message names the file and the space it needed."""


############################ Atomic writes ############################

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
    while not os.path.isdir(folder):  # a writer's folder removed meanwhile: the space of the one above
        folder = os.path.dirname(folder)
    free = shutil.disk_usage(folder).free
    need = f'needed about {needed / 1e6:.0f} MB, ' if needed else ''
    return DiskFull(err.errno, f'{os.strerror(err.errno).lower()}: {path} ({need}{free / 1e6:.0f} MB free); '
                               f'earlier files are intact')


@contextlib.contextmanager
def space_checked(path):
    """A library's own write that failed for want of space (an OSError of FULL_ERRNOS, such as PyAV's or
    the ONNX quantiser's) raises DiskFull naming its file (else `path`) instead."""
    try:
        yield
    except OSError as err:
        if isinstance(err, DiskFull) or err.errno not in FULL_ERRNOS:
            raise
        raise disk_full_error(err, err.filename or path) from None


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
