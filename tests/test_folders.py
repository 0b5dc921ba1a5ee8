"""common.folders under races: one lock holder under any interleaving, a published result never
replaces a folder someone else put in its place, and links read alike inside a folder's tree."""
import json
import multiprocessing
import os
import time

import pytest

from common.folders import (FolderBusy, FolderLock, UnsafeFile, drop_staging, inside_folder, lock_holder, make_staging,
                            publish_staging)

WORKERS = 8  # processes meeting at the barrier of each trial
TRIALS = 300
PUBLISH_TRIALS = 100
BARRIER_TIMEOUT_S = 300  # a bound on a loaded machine, not a timing
HOLD_S = 0.002  # how long a holder keeps the lock: long enough for the others to try meanwhile


def _contend(path, barrier, inside, most, holders, trials):
    """A worker: at each trial's barrier, take the lock if it can, count the holders inside, let go."""
    for trial in range(trials):
        barrier.wait(BARRIER_TIMEOUT_S)
        try:
            with FolderLock(path):
                with inside.get_lock():
                    inside.value += 1
                    most.value = max(most.value, inside.value)
                    holders[trial] += 1
                time.sleep(HOLD_S)
                with inside.get_lock():
                    inside.value -= 1
        except FolderBusy:
            pass
        barrier.wait(BARRIER_TIMEOUT_S)


def _dead_pid():
    process = multiprocessing.get_context('fork').Process(target=lambda: None)
    process.start()
    process.join()
    return process.pid


def _leave_lock(path, trial, dead):
    """Before a trial: no lock file, an empty one (a holder killed before it wrote its PID), or a dead holder's."""
    kind = trial % 3
    if kind:
        with open(path + '.lock', 'w') as f:
            f.write('' if kind == 1 else str(dead))


def test_eight_processes_at_a_barrier_never_hold_one_lock_together(tmp_path):
    context = multiprocessing.get_context('fork')
    path = str(tmp_path / 'folder')
    barrier = context.Barrier(WORKERS + 1)
    inside, most = context.Value('i', 0), context.Value('i', 0)
    holders = context.Array('i', TRIALS)
    workers = [context.Process(target=_contend, args=(path, barrier, inside, most, holders, TRIALS))
               for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    dead = _dead_pid()
    try:
        for trial in range(TRIALS):
            _leave_lock(path, trial, dead)
            barrier.wait(BARRIER_TIMEOUT_S)
            barrier.wait(BARRIER_TIMEOUT_S)
    finally:
        for worker in workers:
            worker.join(BARRIER_TIMEOUT_S)
            worker.kill()
    assert most.value == 1  # never two holders at once
    assert min(holders) >= 1  # a stale, empty or absent lock file never keeps every process out
    assert not os.path.exists(path + '.lock')


def test_a_held_lock_names_its_holder_and_is_free_once_it_dies(tmp_path):
    from tests.helpers import lock_held_elsewhere
    path = str(tmp_path / 'folder')
    with lock_held_elsewhere(path) as holder:
        assert lock_holder(path) == holder.pid
        with pytest.raises(FolderBusy, match=f'being written by process {holder.pid}'):
            FolderLock(path).__enter__()
    with FolderLock(path):  # killed: the kernel let go of its lock
        assert lock_holder(path) is None  # this process's own lock is not another's
    assert lock_holder(path) is None and not os.path.exists(path + '.lock')


def _race_in(target, barrier, created):
    """`mkdir OUT; cp training_state.pt OUT/` at the moment of the publish: what it wrote must stay. A copy
    into an empty folder that was replaced meanwhile fails loudly, which loses nothing."""
    barrier.wait(BARRIER_TIMEOUT_S)
    try:
        os.mkdir(target)
        with open(os.path.join(target, 'training_state.pt'), 'w') as f:
            f.write('precious')
    except (FileExistsError, FileNotFoundError):
        return
    created.value = 1


def test_a_folder_raced_into_the_target_of_a_publish_is_never_removed(tmp_path):
    context = multiprocessing.get_context('fork')
    kept = 0
    for trial in range(PUBLISH_TRIALS):
        target = str(tmp_path / f'out{trial}')
        if trial % 2:  # an earlier result the publish may replace
            os.makedirs(target)
            open(os.path.join(target, 'result.txt'), 'w').close()
        staging = make_staging(target + '.partial', 'a result')
        open(os.path.join(staging, 'result.txt'), 'w').close()
        barrier, created = context.Barrier(2), context.Value('i', 0)
        racer = context.Process(target=_race_in, args=(target, barrier, created))
        racer.start()
        barrier.wait(BARRIER_TIMEOUT_S)
        try:
            publish_staging(staging, target, replaceable=lambda f: os.listdir(f) == ['result.txt'])
        except FileExistsError:
            drop_staging(staging)
        racer.join(BARRIER_TIMEOUT_S)
        if created.value:  # the racer's folder, or the racer's file inside the published result
            with open(os.path.join(target, 'training_state.pt')) as f:
                assert f.read() == 'precious'
            kept += 1
        assert not os.path.exists(staging)
    assert kept  # the race happened


def test_a_publish_replaces_only_what_its_caller_allows(tmp_path):
    target = tmp_path / 'out'
    target.mkdir()
    (target / 'config.json').write_text('{}')
    staging = make_staging(str(target) + '.partial', 'a result')
    with pytest.raises(FileExistsError, match='filled while the result was built'):
        publish_staging(staging, str(target), replaceable=lambda f: False)
    with pytest.raises(FileExistsError, match='filled while the result was built'):
        publish_staging(staging, str(target))
    assert os.listdir(target) == ['config.json'] and os.listdir(staging) == ['.act_staging']
    publish_staging(staging, str(target), replaceable=lambda f: os.listdir(f) == ['config.json'])
    assert os.listdir(target) == [] and not os.path.exists(staging)


def test_links_into_a_hub_cache_tree_are_read_and_links_out_of_it_refused(tmp_path):
    repo = tmp_path / 'models--user--policy'
    (repo / 'blobs').mkdir(parents=True)
    (repo / 'blobs' / 'abc').write_text(json.dumps({}))
    snapshot = repo / 'snapshots' / '0123' / 'pretrained_model'
    snapshot.mkdir(parents=True)
    (snapshot / 'state.safetensors').symlink_to('../../../blobs/abc')
    (tmp_path / 'secret').write_text('x')
    (snapshot / 'escape.safetensors').symlink_to(tmp_path / 'secret')
    assert inside_folder(str(snapshot), 'state.safetensors', 'f.json', 'state_file') == 'state.safetensors'
    for name in ('escape.safetensors', '../../../blobs/abc', '/etc/passwd', 5, None, ''):
        with pytest.raises(UnsafeFile, match='f.json: state_file'):
            inside_folder(str(snapshot), name, 'f.json', 'state_file')
    plain = tmp_path / 'plain'
    plain.mkdir()
    (plain / 'state.safetensors').symlink_to(repo / 'blobs' / 'abc')  # not a hub snapshot: its own tree only
    with pytest.raises(UnsafeFile, match='points outside'):
        inside_folder(str(plain), 'state.safetensors', 'f.json', 'state_file')
