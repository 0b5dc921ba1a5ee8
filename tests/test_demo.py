"""demo.py: clear message without recorded episodes, and the closing report."""
import pytest

import demo
from evaluate import summary_text, write_result_file


def test_demo_without_episodes_says_how_to_record(tmp_path):
    with pytest.raises(SystemExit, match=r'episode_0\.hdf5.*record_sim_episodes\.py'):
        demo.main({'dataset_dir': str(tmp_path), 'num_episodes': 2, 'ckpt_dir': str(tmp_path / 'ckpt'),
                   'num_steps': 1, 'num_rollouts': 1})


def test_demo_report_shows_summary_and_paths(tmp_path, capsys):
    summary = summary_text([4, 1], [30, 2], 4)
    write_result_file(str(tmp_path / 'result_policy_best.txt'), summary, [30, 2], [4, 1])
    demo.report({'ckpt_dir': str(tmp_path), 'dataset_dir': 'data', 'num_rollouts': 2}, 120.0, 30.0)
    out = capsys.readouterr().out
    assert '  Success rate: 0.5\n  Average return: 16.0\n' in out
    assert '  Reward >= 4: 1/2 = 50.0%\n  Reward stages' in out  # the returns list is not shown
    assert str(tmp_path / 'video1.mp4') in out and 'train_val_loss_seed_0.png' in out
    assert 'training 2.0 min, evaluation 0.5 min' in out
    assert out.rstrip().endswith(str(tmp_path / 'report.html'))  # the last line: where the report is


def test_demo_failed_step_and_resume(tmp_path, monkeypatch):
    commands = []

    class Finished:
        returncode = 143

    monkeypatch.setattr(demo.subprocess, 'run', lambda command: commands.append(command) or Finished())
    (tmp_path / 'training_state.pt').write_bytes(b'')  # an interrupted training
    args = {'dataset_dir': 'data', 'num_episodes': 2, 'ckpt_dir': str(tmp_path), 'num_steps': 10, 'num_rollouts': 1}
    with pytest.raises(SystemExit, match=r'exit status 143.*make demo'):
        demo.train(args)
    assert commands[0][1] == 'imitate_episodes.py' and commands[0][-1] == '--resume'
