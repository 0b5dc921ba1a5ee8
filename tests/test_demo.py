"""demo.py (`make demo`, `make recipe`): the recipes' settings, a clear message without recorded
episodes, a failed step, and the closing report."""
import os

import pytest

import demo
from evaluation.results import summary_text, write_result_file


def test_recipes_and_overrides():
    assert demo.parse_args([]) == {'recipe': 'demo', 'out': 'demo', 'seed': 0, 'workers': 2,
                                   **vars(demo.RECIPES['demo'])}
    args = demo.parse_args(['--recipe', 'cpu', '--out', 'recipe', '--num_steps', '10'])
    assert args['num_steps'] == 10 and args['num_rollouts'] == 50 and not args['videos'] and args['out'] == 'recipe'
    with pytest.raises(SystemExit):
        demo.parse_args(['--num_episodes', '1'])


def test_training_without_episodes_says_how_to_record(tmp_path):
    args = demo.parse_args(['--out', str(tmp_path)])
    with pytest.raises(SystemExit, match=r'episode_0\.hdf5.*record_sim_episodes\.py.*--no_shadows'):
        demo.train(args)


def test_report_shows_times_render_setting_summary_and_paths(tmp_path, capsys):
    args = demo.parse_args(['--out', str(tmp_path), '--num_rollouts', '2'])
    ckpt_dir = tmp_path / 'ckpt'
    ckpt_dir.mkdir()
    summary = summary_text([4, 1], [30, 2], 4)
    write_result_file(str(ckpt_dir / 'result_policy_last.txt'), summary, [30, 2], [4, 1])
    demo.report(args, {'recording': 60.0, 'training': 120.0, 'evaluation': 30.0})
    out = capsys.readouterr().out
    assert 'Finished in 3.5 min (recording 1.0 min, training 2.0 min, evaluation 0.5 min)' in out
    assert 'rendered without shadows' in out
    assert '  Success rate: 0.5\n  Average return: 16.0\n' in out
    assert '  Reward >= 4: 1/2 = 50.0%\n  Reward stages' in out  # the returns list is not shown
    assert str(ckpt_dir / 'video1.mp4') in out and 'train_val_loss_seed_0.png' in out
    assert out.rstrip().endswith(str(ckpt_dir / 'report.html'))  # the last line: where the report is
    demo.report(dict(args, videos=False), {'recording': 60.0})
    assert 'video1.mp4' not in capsys.readouterr().out
    demo.report(dict(args, task='sim_insertion_scripted'), {'recording': 60.0})
    out = capsys.readouterr().out
    assert 'the bimanual peg insertion' in out and 'the peg touches the pin (success)' in out
    assert 'cube' not in out and 'record_sim_episodes.py --task_name sim_insertion_scripted' in out


def test_failed_step_and_resume(tmp_path, monkeypatch):
    commands = []

    class Finished:
        returncode = 143

    monkeypatch.setattr(demo.subprocess, 'run', lambda command, env: commands.append(command) or Finished())
    args = demo.parse_args(['--out', str(tmp_path), '--num_episodes', '2'])
    dataset_dir, ckpt_dir = demo.folders(args)
    os.makedirs(dataset_dir)
    os.makedirs(ckpt_dir)
    for i in range(2):
        open(os.path.join(dataset_dir, f'episode_{i}.hdf5'), 'wb').close()
    open(os.path.join(ckpt_dir, 'training_state.pt'), 'wb').close()  # an interrupted training
    with pytest.raises(SystemExit, match=r'exit status 143.*run the same command again'):
        demo.train(args)
    assert commands[0][1] == 'imitate_episodes.py' and commands[0][-1] == '--resume'


@pytest.mark.parametrize('name', ['cpu', 'insertion', 'diffusion', 'so101'])
def test_commands_carry_the_recipe(name, tmp_path, monkeypatch):
    commands = []

    class Done:
        returncode = 0

    monkeypatch.setattr(demo.subprocess, 'run', lambda command, env: commands.append(command) or Done())
    args = demo.parse_args(['--recipe', name, '--out', str(tmp_path), '--num_episodes', '2', '--num_steps', '320',
                            '--seed', '3', '--workers', '1'])
    dataset_dir, _ = demo.folders(args)
    demo.record(args)
    os.makedirs(dataset_dir)
    for i in range(2):
        open(os.path.join(dataset_dir, f'episode_{i}.hdf5'), 'wb').close()
    demo.train(args)
    demo.evaluate(args)
    record, train, evaluate = (' '.join(command) for command in commands)
    recipe = demo.RECIPES[name]
    height, width = recipe.image_size
    assert dataset_dir == os.path.join(str(tmp_path), recipe.task)
    assert f'--task_name {recipe.task} ' in record and f'--task_name {recipe.task} ' in train
    assert f'--image_size {height} {width} ' in record and '--no_shadows' in record
    assert f'--policy_class {recipe.policy} ' in train and ' '.join(recipe.model) in train
    assert '--num_steps 320 ' in train and '--seed 3 ' in train and '--seed 3 ' in record
    assert '--lr_schedule cosine' in train and f'--warmup_steps {320 // demo.WARMUP_SHARE} ' in train
    assert '--num_workers 1 ' in record and '--eval_workers 1 ' in evaluate
    assert ('--temporal_agg' in evaluate) == (name == 'cpu')  # insertion, Diffusion, SO-101: chunk by chunk
    # SO-101: 25 actions of each chunk, recorded in config.json by the training
    assert ('--action_horizon 25 ' in train) == (name == 'so101') and '--action_horizon' not in evaluate


def test_step_times_are_kept_across_runs(tmp_path, monkeypatch):
    args = demo.parse_args(['--out', str(tmp_path)])
    monkeypatch.setattr(demo, 'record', lambda args: 60.0)
    monkeypatch.setattr(demo, 'train', lambda args: 120.0)
    monkeypatch.setattr(demo, 'evaluate', lambda args: 30.0)
    monkeypatch.setattr(demo, 'report', lambda args, seconds: None)
    demo.main(args)
    monkeypatch.setattr(demo, 'train', lambda args: 0.0)  # reused: the first run's time stays
    monkeypatch.setattr(demo, 'record', lambda args: 5.0)
    demo.main(args)
    assert demo.read_timings(str(tmp_path)) == {'recording': 5.0, 'training': 120.0, 'evaluation': 30.0}
