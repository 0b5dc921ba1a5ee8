"""Where the project and its data live: the repository folder, and the root of the task datasets
(`<repo>/data`, or the environment variable ACT_DATA_DIR)."""
import os
import pathlib

REPO_DIR = pathlib.Path(__file__).resolve().parent.parent
DATA_DIR = os.environ.get('ACT_DATA_DIR', str(REPO_DIR / 'data'))  # root of all task datasets
