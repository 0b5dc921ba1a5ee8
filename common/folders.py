"""Folders that several processes may race for: building a result beside its place, publishing it
there without ever replacing what someone else put there, and one writer per folder.

A result folder (an export, a conversion, a recording) is built in a staging folder marked with
STAGING_MARKER, then renamed into place with `publish_staging`. The rename never replaces a folder
that appeared meanwhile (renameat2's RENAME_NOREPLACE, or POSIX rename, which refuses a non-empty
folder); an earlier result is replaced only when the caller's `replaceable` test holds for it, and
only after it was moved aside and checked again, so a folder raced into its place is left intact.

`FolderLock` makes one process the writer of a folder: it holds an OS lock (`flock`) on
`<folder>.lock` for its lifetime, so the kernel releases it when the holder dies, however it dies,
and two holders at once are impossible under any interleaving. The file also names the holder's PID
for the messages.
"""
import contextlib
import ctypes
import errno
import fcntl
import os
import shutil

STAGING_MARKER = '.act_staging'  # inside every staging folder this project builds a result in, and nowhere else
LOCK_SUFFIX = '.lock'  # <folder>.lock: held (flock) by the one process writing the folder; holds its PID
AT_FDCWD = -100  # renameat2: paths relative to the working directory (linux/fcntl.h)
RENAME_NOREPLACE = 1  # renameat2: fail with EEXIST rather than replace the target (linux/fs.h)
_held = set()  # lock files this process holds
HUB_SNAPSHOTS, HUB_BLOBS = 'snapshots', 'blobs'  # a Hugging Face hub cache: <repo>/snapshots/<rev>/x -> <repo>/blobs/


class UnsafeFile(ValueError):
    """A shared file holds objects that could run code when loaded, or points outside its folder; it was refused."""


def link_tree(folder):
    """Where the links of `folder`'s files may lead: the folder itself, or for a folder inside a
    Hugging Face hub cache snapshot (<repo>/snapshots/<revision>/...) the whole <repo> (its files are
    links to <repo>/blobs/)."""
    real = os.path.realpath(folder)
    parts = real.split(os.sep)
    if HUB_SNAPSHOTS in parts[:-1]:
        repo = os.sep.join(parts[:len(parts) - 1 - parts[::-1].index(HUB_SNAPSHOTS)]) or os.sep
        if os.path.isdir(os.path.join(repo, HUB_BLOBS)):
            return repo
    return real


def inside_folder(folder, relative, source, key, error=UnsafeFile):
    """`relative`, a path that file `source` gives under `key`, when it names a file of `folder` that
    resolves inside the folder's tree (link_tree); otherwise `error` naming the file and the key (a data
    file never points outside its folder)."""
    if not isinstance(relative, str) or not relative:
        raise error(f'{source}: {key} is {relative!r}; the name of a file inside {folder} (a string) is expected')
    base = os.path.abspath(folder)
    joined = os.path.normpath(os.path.join(base, relative))
    tree = link_tree(folder)
    resolved = os.path.realpath(joined)
    if (os.path.isabs(relative) or os.path.commonpath([base, joined]) != base
            or os.path.commonpath([tree, resolved]) != tree):
        raise error(f'{source}: {key} {relative!r} points outside {folder}; refused (a file of the folder is '
                    f'expected)')
    return relative


############################ Staging and publishing ############################

def make_staging(path, result):
    """An empty staging folder at `path`, where `result` is built before it is renamed into place.
    A leftover of this project's (its marker inside) is cleared; a folder of someone else's is refused."""
    if os.path.lexists(path):
        if not is_staging(path):
            raise FileExistsError(f'{path} exists and is not a staging folder of this project, which builds {result} '
                                  f'there first: move it away (nothing in it was touched)')
        shutil.rmtree(path)
    os.makedirs(path)
    _mark(path)
    return path


def _mark(path):
    open(os.path.join(path, STAGING_MARKER), 'w').close()


def _real_folder(path):
    """A folder, not a link to one."""
    return os.path.isdir(path) and not os.path.islink(path)


def is_staging(path):
    return _real_folder(path) and os.path.isfile(os.path.join(path, STAGING_MARKER))


def rename_no_replace(src, dst):
    """Rename `src` to `dst`; FileExistsError when `dst` exists, even if it appeared a moment before."""
    libc = ctypes.CDLL(None, use_errno=True)
    rename2 = getattr(libc, 'renameat2', None)
    if rename2 is not None:
        if rename2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):  # else: the file system cannot; plain rename below
            raise (FileExistsError if code == errno.EEXIST else OSError)(code, os.strerror(code), dst)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst)
    os.rename(src, dst)  # a folder onto a folder that appeared since: refused unless it is empty


def publish_staging(path, target, replaceable=None):
    """Rename the complete staging folder `path` to `target`, unmarked. An empty folder at `target` is
    replaced; an earlier result only when replaceable(folder) holds for it, checked after it was moved
    aside. Anything else at `target`, however late it appeared, stays: FileExistsError, with `path`
    still a staging folder (the caller drops it)."""
    aside = _move_aside(target, replaceable) if replaceable and _holds_something(target) else None
    os.remove(os.path.join(path, STAGING_MARKER))
    try:
        if _real_folder(target):
            os.rename(path, target)  # POSIX replaces an empty folder atomically, never a filled one
        else:
            rename_no_replace(path, target)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
            raise
        _mark(path)
        if aside:
            _restore(aside, target)
        raise FileExistsError(_taken(target)) from None
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


def _taken(target):
    return (f'{target} was filled while the result was built (another process put something there that this '
            f'project may not replace): it was left as it is, and the result was not put in its place')


def _holds_something(target):
    return os.path.lexists(target) and not (_real_folder(target) and not os.listdir(target))


def _move_aside(target, replaceable):
    """Move the earlier result at `target` to a hidden name beside it and check it there (what was
    checked is what will be removed); restored and FileExistsError when it is not replaceable."""
    folder, name = os.path.split(os.path.abspath(target))
    aside = os.path.join(folder, f'.{name}.replaced.{os.getpid()}')
    if os.path.lexists(aside):
        shutil.rmtree(aside)
    rename_no_replace(target, aside)
    if not _real_folder(aside) or not replaceable(aside):
        _restore(aside, target)
        raise FileExistsError(_taken(target))
    return aside


def _restore(aside, target):
    try:
        rename_no_replace(aside, target)
    except FileExistsError:
        raise FileExistsError(f'{target} appeared while it was being replaced: the earlier one is kept in '
                              f'{aside}') from None


def drop_staging(path):
    """Remove the staging folder `path` when it is this project's; anything else is left alone."""
    if is_staging(path):
        shutil.rmtree(path, ignore_errors=True)


############################ One writer per folder ############################

class FolderBusy(ValueError):
    """Another living process holds the lock of a folder this process would write (the message names it)."""


def lock_file(path):
    return path.rstrip(os.sep) + LOCK_SUFFIX


def _read_pid(fd):
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    return None


def lock_holder(path):
    """The PID of the process other than this one that holds `path`'s lock (None when nobody else
    does; 0 when one does whose PID is not written yet)."""
    file = lock_file(path)
    if file in _held:
        return None
    try:
        fd = os.open(file, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or 0
    finally:
        os.close(fd)
    return None


class FolderLock:
    """An exclusive lock on the folder `path` for this process: an OS lock on `<path>.lock`, which also
    holds this process's PID. Refused naming the holder while one lives; free again when it dies."""

    def __init__(self, path):
        self.path, self.file, self.fd = path, lock_file(path), None

    def __enter__(self):
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                who = f'process {holder}' if holder else 'another process'
                raise FolderBusy(f'{self.path} is being written by {who} (lock {self.file}): let it finish '
                                 f'first') from None
            if self._still_there(fd):
                break
            os.close(fd)  # its holder removed it as it let go: take the one now at the path
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        _held.add(self.file)
        return self

    def _still_there(self, fd):
        try:
            now = os.stat(self.file)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)

    def __exit__(self, *exc):
        if self.fd is None:
            return
        _held.discard(self.file)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.file)  # still held: a waiting process finds the file gone and takes a new one
        os.close(self.fd)
        self.fd = None
