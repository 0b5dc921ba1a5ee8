"""The journal of an append to a LeRobot dataset (formats.lerobot_writer): the new files are built in
PENDING_DIR inside the dataset, COMMIT_FILE is written once every one is complete, then they are
moved in, the dataset's info file (meta/info.json) last: the dataset changes when it does. An append interrupted before the commit is rolled back by the next reader
or writer, one interrupted after it is completed (finish_pending_append), unless a living writer
still holds the dataset's lock.
"""
import os
import shutil

from common.folders import STAGING_MARKER, lock_holder

PENDING_DIR = '.pending'  # an append's new files, built here before they are moved into the dataset
COMMIT_FILE = 'COMMITTED'  # written into PENDING_DIR once every file of the append is complete


def finish_pending_append(root, last):
    """Complete or roll back an append to the dataset at root that was interrupted (killed, Ctrl-C):
    once committed, every file is in PENDING_DIR and the rest of them are moved in, `last` (the
    dataset's info file, relative to root) last;
    before that, nothing was moved and PENDING_DIR is dropped. Left alone while a living writer holds
    the dataset's lock. Returns what was done: 'completed', 'rolled back' or None."""
    pending = os.path.join(root, PENDING_DIR)  # inside the dataset: this project's, marked or not
    if not os.path.isdir(pending) or lock_holder(root) is not None:
        return None
    if not os.path.isfile(os.path.join(pending, COMMIT_FILE)):
        shutil.rmtree(pending, ignore_errors=True)
        return 'rolled back'
    move_in(pending, root, last)
    return 'completed'


def move_in(pending, root, last):
    """Move the committed files of PENDING_DIR into the dataset, `last` last, then drop PENDING_DIR."""
    moved = []
    for folder, _, names in os.walk(pending):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), pending)
            if relative not in (last, COMMIT_FILE, STAGING_MARKER):
                moved.append(relative)
    for relative in sorted(moved) + [last]:
        if os.path.isfile(os.path.join(pending, relative)):  # a resumed move finds some moved already
            target = os.path.join(root, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(pending, relative), target)
    shutil.rmtree(pending, ignore_errors=True)
