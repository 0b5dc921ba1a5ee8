"""bench/learning.py: seeds run side by side, figures read from each seed's result file and step
times, a finished seed kept when the sweep is run again, a failed seed named."""
import json
import os

import pytest

from bench import learning
from evaluation.results import summary_text, write_result_file

# A stand-in for demo.py that imports nothing heavy: it writes the result file made here for its
# seed (seed s: s+1 of 4 rollouts succeed) and its step times
FAKE_DEMO = '''
import json, os, sys
folder, seed = sys.argv[1], int(sys.argv[2])
with open(os.path.join(folder, 'runs.txt'), 'a') as f:
    f.write('run\\n')
if seed == 13:
    sys.exit(3)
os.makedirs(os.path.join(folder, 'ckpt'), exist_ok=True)
with open(os.path.join(folder, 'ckpt', 'result_policy_last.txt'), 'w') as f:
    f.write({results!r}[seed])
with open(os.path.join(folder, 'timings.json'), 'w') as f:
    json.dump({{'recording': 60.0, 'training': 120.0 * (seed + 1), 'evaluation': 30.0}}, f)
'''


def result_text(seed, tmp_path):
    """The result file evaluation writes when seed + 1 of 4 rollouts succeed."""
    highest = [4] * (seed + 1) + [1] * (3 - seed)
    path = str(tmp_path / f'result_{seed}.txt')
    write_result_file(path, summary_text(highest, highest, 4), highest, highest)
    with open(path) as f:
        return f.read()


@pytest.fixture
def fake_demo(monkeypatch, tmp_path):
    code = FAKE_DEMO.format(results={seed: result_text(seed, tmp_path) for seed in range(3)})
    monkeypatch.setattr(learning, 'demo_command',
                        lambda args, seed: ['-c', code, learning.seed_folder(args, seed), str(seed)])


def runs(args, seed):
    with open(os.path.join(learning.seed_folder(args, seed), 'runs.txt')) as f:
        return len(f.readlines())


def test_sweep_reports_each_seed_and_the_spread(tmp_path, fake_demo, capsys):
    args = learning.parse_args(['--recipe', 'cpu', '--seeds', '0', '2', '--out', str(tmp_path)])
    learning.main(args)
    report = json.loads(capsys.readouterr().out)
    assert [s['success_rate'] for s in report['seeds']] == [0.25, 0.75]
    assert report['seeds'][1]['stages'] == {'0': 4, '1': 4, '2': 3, '3': 3, '4': 3}
    assert report['seeds'][1]['minutes'] == {'recording': 1.0, 'training': 6.0, 'evaluation': 0.5, 'total': 7.5}
    assert report['seeds'][0]['peak_rss_gib'] > 0
    assert (report['success_mean'], report['success_min'], report['success_max']) == (0.5, 0.25, 0.75)
    assert report['training_minutes_mean'] == 4.0


def test_a_sweep_run_again_keeps_finished_seeds(tmp_path, fake_demo):
    args = learning.parse_args(['--recipe', 'insertion', '--seeds', '0', '1', '--out', str(tmp_path)])
    learning.main(args)
    more = learning.parse_args(['--recipe', 'insertion', '--seeds', '0', '1', '2', '--out', str(tmp_path),
                                '--parallel', '1'])
    learning.main(more)
    assert [runs(more, seed) for seed in (0, 1, 2)] == [1, 1, 1]
    with open(learning.sweep_path(more)) as f:
        assert sorted(json.load(f)) == ['0', '1', '2']


def test_a_seed_that_ends_before_the_next_starts_is_still_counted(tmp_path, fake_demo, monkeypatch):
    launch = learning.start

    def slow_start(args, seed):  # the seed's process has ended by the time the next one is started
        process = launch(args, seed)
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # ended, left for the sweep to collect
        return process
    monkeypatch.setattr(learning, 'start', slow_start)
    args = learning.parse_args(['--seeds', '0', '1', '--out', str(tmp_path)])
    learning.main(args)
    with open(learning.sweep_path(args)) as f:
        assert sorted(json.load(f)) == ['0', '1']


def test_a_failed_seed_is_named_and_the_others_are_kept(tmp_path, fake_demo):
    args = learning.parse_args(['--seeds', '0', '13', '--out', str(tmp_path), '--parallel', '1'])
    with pytest.raises(SystemExit, match=r'seed 13 stopped.*cpu_seed13/demo.log.*run the same command again'):
        learning.main(args)
    with open(learning.sweep_path(args)) as f:
        assert list(json.load(f)) == ['0']


def test_the_real_command_is_demo_py_with_the_seed(tmp_path):
    args = learning.parse_args(['--recipe', 'diffusion', '--seeds', '4', '--out', str(tmp_path)])
    assert learning.demo_command(args, 4) == ['demo.py', '--recipe', 'diffusion', '--out',
                                              str(tmp_path / 'diffusion_seed4'), '--seed', '4', '--workers', '1']
    with pytest.raises(SystemExit):
        learning.parse_args(['--seeds', '1', '1'])
