"""Worker processes that end with the process that started them.

A worker of the data loader, of parallel recording or of parallel evaluation calls
`die_with_parent(parent_pid)` first: killed with its parent (even by kill -9), it does not go on
recording or rendering for minutes, competing with the next run. On Linux the kernel delivers
SIGKILL when the parent dies (PR_SET_PDEATHSIG). Where that cannot serve (another OS, or a worker
forked by multiprocessing's forkserver, whose direct parent outlives the run), a thread checks the
parent once a second.
"""
import ctypes
import os
import signal
import sys
import threading
import time

### Settings
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): signal this process when its parent dies
WATCHDOG_PERIOD_S = 1.0  # how often the fallback watchdog checks the parent


def process_alive(pid):
    """True while process `pid` exists (this machine's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def die_with_parent(parent_pid):
    """End this process when process `parent_pid` (the one that started the work) ends."""
    direct = os.getppid() == parent_pid
    if direct and sys.platform.startswith('linux') and _set_parent_death_signal():
        # the parent may have died before the signal was armed
        if not process_alive(parent_pid):
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name='parent-watchdog').start()


def _set_parent_death_signal():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid):
    while process_alive(parent_pid):
        time.sleep(WATCHDOG_PERIOD_S)
    os._exit(1)


def worker_pool(num_workers, initializer, initargs=(), preload=None):
    """A multiprocessing pool of fresh processes (no GL context or open file crosses a fork) whose
    workers die with this process, each first running initializer(*initargs). preload: modules the
    forkserver imports once for all workers (where the platform has a forkserver); None: spawn."""
    import multiprocessing
    if preload is not None and 'forkserver' in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context('forkserver')
        context.set_forkserver_preload(list(preload))
    else:
        context = multiprocessing.get_context('spawn')
    return context.Pool(num_workers, initializer=_start_worker, initargs=(os.getpid(), initializer, *initargs))


def _start_worker(parent_pid, initializer, *initargs):
    die_with_parent(parent_pid)
    initializer(*initargs)
