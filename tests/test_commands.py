"""The one-line commands the README gives, typed as a new user types them: short task names,
the default recipe and checkpoint folder, train then evaluate, missing data, adding a task."""
import json
import os
import subprocess
import sys

import pytest

import imitate_episodes
import tasks
from checkpoints.folder import CONFIG_FILE
from cli import run_config
from constants import SIM_TASK_CONFIGS
from tasks import canonical_task_name, get_sim_task_config
from tests.helpers import PROCESS_TIMEOUT_S, ROOT, TASK, TINY_IMAGE_HW, tiny_model_flags, write_tiny_episode

SHORT = 'sim_transfer_cube'
NUM_EPISODES = 5
STEPS = 10  # control steps of the tests' rollouts and recordings (the task has 400)


def run(argv):
    """imitate_episodes.py's command line, in this process: parsed, then run as its __main__ does."""
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(argv)))


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    """A temporary data root for the transfer-cube task, short episodes, and tmp_path as the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(SIM_TASK_CONFIGS[TASK], 'dataset_dir', str(tmp_path / 'data' / TASK))
    monkeypatch.setitem(SIM_TASK_CONFIGS[TASK], 'num_episodes', NUM_EPISODES)
    monkeypatch.setitem(SIM_TASK_CONFIGS[TASK], 'episode_len', STEPS)
    return tmp_path / 'data' / TASK


def write_episodes(dataset_dir, count, **kwargs):
    os.makedirs(dataset_dir, exist_ok=True)
    for i in range(count):
        write_tiny_episode(os.path.join(dataset_dir, f'episode_{i}.hdf5'), seed=i, **kwargs)


def test_short_names_mean_the_scripted_tasks_everywhere():
    assert canonical_task_name('sim_insertion') == 'sim_insertion_scripted'
    assert get_sim_task_config(SHORT) is SIM_TASK_CONFIGS[TASK]
    assert canonical_task_name('sim_insertion_human') == 'sim_insertion_human'
    from scripted_policy import SCRIPTED_POLICIES, get_scripted_policy_class
    assert get_scripted_policy_class(SHORT) is SCRIPTED_POLICIES[TASK]
    with pytest.raises(KeyError, match=r'sim_insertion \(= sim_insertion_scripted\).*sim_transfer_cube_scripted'):
        get_sim_task_config('sim_no_such_task')


def test_help_and_unknown_task_list_both_names():
    done = subprocess.run([sys.executable, 'imitate_episodes.py', '--task_name', 'sim_nope', '--policy_class', 'ACT'],
                          cwd=ROOT, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == 2 and 'Traceback' not in done.stderr
    assert "unknown task 'sim_nope'" in done.stderr
    assert 'sim_transfer_cube (= sim_transfer_cube_scripted)' in done.stderr and 'sim_insertion_human' in done.stderr
    help_text = imitate_episodes.build_parser().format_help()
    assert 'sim_insertion (= sim_insertion_scripted)' in ' '.join(help_text.split())


def test_the_short_command_is_the_readme_recipe():
    args = run_config.with_default_folder(vars(imitate_episodes.build_parser().parse_args(
        ['--task_name', SHORT, '--policy_class', 'ACT'])))
    assert args['task_name'] == TASK and args['ckpt_dir'] == os.path.join('ckpt', TASK)
    assert (args['batch_size'], args['num_epochs'], args['seed']) == (8, 2000, 0)
    config = run_config.make_policy_config(args, ['top'], 14, 14, (480, 640))
    recipe = {'kl_weight': 10, 'num_queries': 100, 'hidden_dim': 512, 'dim_feedforward': 3200, 'lr': 1e-5}
    assert {key: config[key] for key in recipe} == recipe
    # the original's full command line keeps its meaning
    given = run_config.with_default_folder(vars(imitate_episodes.build_parser().parse_args(
        ['--task_name', TASK, '--ckpt_dir', 'elsewhere', '--policy_class', 'ACT', '--kl_weight', '1',
         '--chunk_size', '20', '--hidden_dim', '64', '--batch_size', '4', '--dim_feedforward', '128',
         '--num_epochs', '10', '--lr', '1e-4', '--seed', '3'])))
    config = run_config.make_policy_config(given, ['top'], 14, 14, (480, 640))
    assert given['ckpt_dir'] == 'elsewhere' and (given['batch_size'], given['num_epochs'], given['seed']) == (4, 10, 3)
    assert (config['kl_weight'], config['num_queries'], config['hidden_dim'], config['lr']) == (1, 20, 64, 1e-4)


def test_train_then_evaluate_with_the_short_commands(data_root, tmp_path, capsys):
    write_episodes(data_root, NUM_EPISODES, image_hw=TINY_IMAGE_HW)
    run(['--task_name', SHORT, '--policy_class', 'ACT', '--num_epochs', '2', *tiny_model_flags()])
    out = capsys.readouterr().out
    ckpt_dir = tmp_path / 'ckpt' / TASK
    assert f'--ckpt_dir {os.path.join("ckpt", TASK)} (the default for --task_name {TASK})' in out
    assert (ckpt_dir / 'policy_best.ckpt').is_file()
    config = json.loads((ckpt_dir / CONFIG_FILE).read_text())
    assert config['task_name'] == TASK and config['training']['batch_size'] == 8
    assert config['policy_config']['kl_weight'] == 10 and config['policy_config']['lr'] == 1e-5

    run(['--task_name', SHORT, '--policy_class', 'ACT', '--eval', '--temporal_agg', '--num_rollouts', '1',
         '--device', 'cpu'])
    out = capsys.readouterr().out
    assert 'policy_best.ckpt: success_rate=' in out and 'overrides' not in out
    assert (ckpt_dir / 'result_policy_best.txt').is_file() and (ckpt_dir / 'report.html').is_file()


def test_missing_data_says_how_to_record_it_before_building_anything(data_root, tmp_path):
    with pytest.raises(imitate_episodes.MissingData) as caught:
        run(['--task_name', SHORT, '--policy_class', 'ACT', *tiny_model_flags()])
    message = str(caught.value)
    assert f'{data_root} holds none of the {NUM_EPISODES} episodes' in message
    assert f'python record_sim_episodes.py --task_name {TASK}\n' in message  # the task's own folder and count
    assert 'min at 480x640 on a 2-core CPU' in message and '--record_missing' in message
    assert not (tmp_path / 'ckpt').exists()

    write_episodes(data_root, 2, image_hw=TINY_IMAGE_HW)
    with pytest.raises(imitate_episodes.MissingData, match=r'lacks 3 of the 5 episodes .*episode_2\.hdf5'):
        run(['--task_name', SHORT, '--policy_class', 'ACT', *tiny_model_flags()])
    with pytest.raises(imitate_episodes.MissingData, match='human demonstrations'):
        run(['--task_name', 'sim_insertion_human', '--policy_class', 'ACT', '--dataset_dir', str(tmp_path / 'none'),
             *tiny_model_flags()])


def test_missing_data_is_a_clean_command_line_error(tmp_path):
    env = {**os.environ, 'ACT_DATA_DIR': str(tmp_path / 'data')}
    done = subprocess.run([sys.executable, os.path.join(ROOT, 'imitate_episodes.py'), '--task_name', 'sim_insertion',
                           '--policy_class', 'ACT'], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=PROCESS_TIMEOUT_S)
    assert done.returncode == 1 and 'Traceback' not in done.stderr
    assert 'python record_sim_episodes.py --task_name sim_insertion_scripted' in done.stderr
    assert not (tmp_path / 'ckpt').exists()


def test_record_missing_records_then_trains(data_root, tmp_path, capsys):
    write_episodes(data_root, 1, episode_len=STEPS, image_hw=TINY_IMAGE_HW)
    run(['--task_name', SHORT, '--policy_class', 'ACT', '--num_episodes', '2', '--image_size', *map(str, TINY_IMAGE_HW),
         '--record_missing', '--num_epochs', '1', '--batch_size', '1', *tiny_model_flags()])
    out = capsys.readouterr().out
    assert '--record_missing: recording 1 episodes' in out
    assert 'episode_idx=1 EE rollout' in out and 'episode_0.hdf5 exists: skipping' in out
    from formats.hdf5 import read_episode
    recorded = read_episode(str(data_root / 'episode_1.hdf5'))
    assert recorded.images['top'].shape == (STEPS, *TINY_IMAGE_HW, 3)
    assert (tmp_path / 'ckpt' / TASK / 'policy_best.ckpt').is_file()


def test_a_task_added_to_constants_trains(tmp_path, monkeypatch, capsys):
    """The README's example entry: another state size and two cameras."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(SIM_TASK_CONFIGS, 'sim_my_task', {
        'dataset_dir': str(tmp_path / 'data' / 'sim_my_task'),
        'num_episodes': 4,
        'episode_len': 300,
        'camera_names': ['top', 'wrist'],
    })
    write_episodes(tmp_path / 'data' / 'sim_my_task', 4, state_dim=6, camera_names=('top', 'wrist'),
                   image_hw=TINY_IMAGE_HW)
    run(['--task_name', 'sim_my_task', '--policy_class', 'ACT', '--num_epochs', '2', '--batch_size', '2',
         *tiny_model_flags()])
    config = json.loads((tmp_path / 'ckpt' / 'sim_my_task' / CONFIG_FILE).read_text())
    assert config['state_dim'] == config['action_dim'] == 6 and config['camera_names'] == ['top', 'wrist']
    assert (tmp_path / 'ckpt' / 'sim_my_task' / 'policy_best.ckpt').is_file()


def test_a_sim_task_needs_the_sim_prefix(monkeypatch):
    monkeypatch.setitem(SIM_TASK_CONFIGS, 'my_task', SIM_TASK_CONFIGS[TASK])
    with pytest.raises(KeyError, match="must begin with 'sim_'"):
        tasks.get_task_config('my_task')
