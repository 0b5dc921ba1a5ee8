"""cli/errors.py: how every entry script ends on bad input -- one line naming what is wrong, never a
traceback unless ACT_DEBUG=1 -- while a fault of the hardware or the code keeps its traceback."""
import argparse
import os
import subprocess
import sys

import pytest

from cli.errors import DEBUG_VAR, run_command
from common.files import DiskFull
from tests.helpers import ROOT


def failing(error):
    def main(args):
        raise error
    return main


@pytest.mark.parametrize('error, code, text', [
    (TypeError("features of meta/info.json: 'shape' is a str, not a list"), 2,
     "prog: error: features of meta/info.json: 'shape' is a str, not a list (ACT_DEBUG=1 shows where it was raised)"),
    (KeyError('config.json has no policy_class'), 2, 'prog: error: config.json has no policy_class (ACT_DEBUG=1'),
    (FileExistsError('out exists'), 1, 'prog: error: out exists'),
    (DiskFull(28, 'no space left on device: f (needed about 2 MB)'), 1, 'prog: error: no space left on device: f'),
])
def test_bad_input_ends_in_one_line(error, code, text, capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_VAR, raising=False)
    parser = argparse.ArgumentParser(prog='prog')
    with pytest.raises(SystemExit) as stop:
        run_command(parser, failing(error), {}, plain=(FileExistsError,))
    message = capsys.readouterr().err + (stop.value.code if isinstance(stop.value.code, str) else '')
    assert (stop.value.code if isinstance(stop.value.code, int) else 1) == code and text in message


def test_usage_errors_show_the_usage_and_faults_keep_their_traceback(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_VAR, raising=False)
    parser = argparse.ArgumentParser(prog='prog')
    with pytest.raises(SystemExit) as stop:
        run_command(parser, failing(ValueError('--lr must be more than 0, got -1')), {}, usage=(ValueError,))
    assert stop.value.code == 2 and 'usage: prog' in capsys.readouterr().err
    with pytest.raises(RuntimeError, match='servo 3 did not answer'):  # a fault, not bad input
        run_command(parser, failing(RuntimeError('servo 3 did not answer')), {})
    monkeypatch.setenv(DEBUG_VAR, '1')
    with pytest.raises(TypeError):
        run_command(parser, failing(TypeError('bad')), {})


def test_a_script_answers_bad_input_in_one_line():
    done = subprocess.run([sys.executable, 'convert_checkpoint.py', '--to', 'act', os.path.join(ROOT, 'docs'),
                           os.path.join(ROOT, 'no_such_destination')], cwd=ROOT, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != DEBUG_VAR})
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    assert 'convert_checkpoint.py: error: ' in done.stderr and 'is not a LeRobot checkpoint folder' in done.stderr


def test_training_into_a_folder_that_cannot_be_written_is_one_line(tiny_dataset):
    from tests.helpers import train_argv
    done = subprocess.run([sys.executable, 'imitate_episodes.py', *train_argv(tiny_dataset, '/proc/act_ckpt')],
                          cwd=ROOT, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != DEBUG_VAR})
    error = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert error.startswith('imitate_episodes.py: error: --ckpt_dir /proc/act_ckpt is not a writable folder')
