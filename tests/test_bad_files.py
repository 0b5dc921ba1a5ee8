"""Every crafted or broken file a user may hand over is refused in one line that names the file and
the key and says what was expected; nothing is written before the check."""
import json
import re
import shutil
import os
import subprocess
import sys

import pytest
import torch

from checkpoints.lerobot import read_lerobot_checkpoint
from formats.lerobot import LeRobotFormatError
from tests.helpers import ROOT
from tests.test_lerobot_diffusion import lerobot_config, tiny_lerobot_folder

pytestmark = pytest.mark.usefixtures('one_thread')
PRE = 'policy_preprocessor.json'
DEEP_JSON = '[' * 200_000 + ']' * 200_000  # deeper than any parser's recursion


@pytest.fixture(scope='module')
def lerobot_folder(tmp_path_factory):
    return tiny_lerobot_folder(str(tmp_path_factory.mktemp('lr') / 'good'), lerobot_config())


def edited(folder, name, edit):
    path = os.path.join(folder, name)
    with open(path) as f:
        obj = json.load(f)
    obj = edit(obj) or obj
    with open(path, 'w') as f:
        json.dump(obj, f)


def normalizer_step(obj):
    return next(s for s in obj['steps'] if s.get('registry_name') == 'normalizer_processor')


def image_shape(obj, shape):
    for key, feature in obj['input_features'].items():
        if key.startswith('observation.images.'):
            feature['shape'] = shape


def statistics(folder, edit):
    from safetensors.torch import load_file, save_file
    with open(os.path.join(folder, PRE)) as f:
        path = os.path.join(folder, normalizer_step(json.load(f))['state_file'])
    save_file(edit(load_file(path)), path)
    return path


CONFIG_CASES = {  # config.json edit -> what the message says after the file's name
    'feature a string': (lambda o: o['input_features'].update({'observation.state': 'x'}),
                         r'input_features: an object of features'),
    'input_features a list': (lambda o: o.update(input_features=['observation.state']),
                              r'input_features: an object of features'),
    'normalization_mapping a list': (lambda o: o.update(normalization_mapping=['MEAN_STD']),
                                     r"normalization_mapping \['MEAN_STD'\]: an object"),
    'state shape []': (lambda o: o['input_features']['observation.state'].update(shape=[]),
                       r'input_features observation.state shape \[\]: a list of positive whole sizes'),
    'state shape ["six"]': (lambda o: o['input_features']['observation.state'].update(shape=['six']),
                            r"input_features observation.state shape \['six'\]: a list of positive whole sizes"),
    'image shape [3, 48.5, 64]': (lambda o: image_shape(o, [3, 48.5, 64]),
                                  r'shape \[3, 48.5, 64\]: a list of positive'),
    'clip_sample_range "big"': (lambda o: o.update(clip_sample_range='big'), r"clip_sample_range 'big': a number"),
    'type a list': (lambda o: o.update(type=['diffusion']), r"LeRobot \"\['diffusion'\]\" policy"),
}
PIPELINE_CASES = {  # policy_preprocessor.json edit -> message
    'a list': (lambda o: [1, 2], r'an object \(\{...\}\) is expected, not list'),
    'steps strings': (lambda o: o.update(steps=['a', 'b']), r"steps \['a', 'b'\]: a list of step objects"),
    'norm_map a list': (lambda o: normalizer_step(o)['config'].update(norm_map=['MEAN_STD']),
                        r"norm_map \['MEAN_STD'\]: an object"),
    'eps "tiny"': (lambda o: normalizer_step(o)['config'].update(eps='tiny'), r"eps 'tiny': a number"),
    'state_file 5': (lambda o: normalizer_step(o).update(state_file=5), r'state_file is 5; the name of a file'),
    'state_file null': (lambda o: normalizer_step(o).update(state_file=None),
                        r'state_file is None; the name of a file'),
}


@pytest.mark.parametrize('case', CONFIG_CASES)
def test_a_bad_lerobot_config_is_named(lerobot_folder, tmp_path, case):
    folder = shutil.copytree(lerobot_folder, tmp_path / 'lr')
    edit, message = CONFIG_CASES[case]
    edited(folder, 'config.json', edit)
    with pytest.raises(LeRobotFormatError, match=f'{folder}/config.json(: | is ).*{message}'):
        read_lerobot_checkpoint(str(folder))


@pytest.mark.parametrize('case', PIPELINE_CASES)
def test_a_bad_processor_pipeline_is_named(lerobot_folder, tmp_path, case):
    folder = shutil.copytree(lerobot_folder, tmp_path / 'lr')
    edit, message = PIPELINE_CASES[case]
    edited(folder, PRE, edit)
    with pytest.raises(LeRobotFormatError, match=f'{folder}/{PRE}: .*{message}'):
        read_lerobot_checkpoint(str(folder))


def test_bad_statistics_tensors_are_named(lerobot_folder, tmp_path):
    folder = str(shutil.copytree(lerobot_folder, tmp_path / 'lr'))
    path = statistics(folder, lambda t: {**t, 'nodot': torch.zeros(1)})
    with pytest.raises(LeRobotFormatError, match=f"{path}: tensor 'nodot': names \"<feature>.<stat>\""):
        read_lerobot_checkpoint(folder)
    statistics(folder, lambda t: {**{k: v for k, v in t.items() if k != 'nodot'},
                                  'observation.state.min': torch.zeros(5, 7)})
    with pytest.raises(LeRobotFormatError, match=r'observation.state.min has \(5, 7\): one value, or one per value'):
        read_lerobot_checkpoint(folder)


def run_script(*argv):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, 'MUJOCO_GL': 'egl'})


def test_json_nested_200000_deep_is_one_line(lerobot_folder, tmp_path):
    folder = str(shutil.copytree(lerobot_folder, tmp_path / 'lr'))
    with open(os.path.join(folder, 'config.json'), 'w') as f:
        f.write(DEEP_JSON)
    for argv in (['convert_checkpoint.py', '--to', 'act', folder, str(tmp_path / 'out')],
                 ['imitate_episodes.py', '--eval', '--ckpt_dir', folder, '--num_rollouts', '1']):
        done = run_script(*argv)
        assert done.returncode != 0 and 'Traceback' not in done.stderr, done.stderr[-2000:]
        assert re.search(f'{folder}/config.json.*not a file this project reads \\(JSON nested more than 100 deep',
                         done.stderr)
        assert not os.path.exists(tmp_path / 'out')


@pytest.mark.parametrize('content, message', [
    (None, r'so_leader.json: no calibration file; calibrate the arm'),
    ('{"a": 1}', r"so_leader.json: a calibration of another arm: joints \['a'\]"),
    (DEEP_JSON, r'so_leader.json: not a calibration file \(JSON expected\): .*JSON nested more than 100 deep'),
])
def test_teleoperation_with_a_bad_leader_calibration_is_one_line(tmp_path, content, message):
    if content is not None:
        (tmp_path / 'so_leader.json').write_text(content)
    done = subprocess.run([sys.executable, 'record_episodes.py', '--task_name', 'so101_pick_place', '--robot_driver',
                           'sim', '--teleop_only'], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, 'MUJOCO_GL': 'egl', 'ACT_CALIBRATION_DIR': str(tmp_path)})
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr[-2000:]
    assert re.search(r"record_episodes.py: error: arm 'so_leader': .*" + message, done.stderr)


def test_a_folder_in_the_hub_cache_layout_reads_and_a_link_out_of_its_tree_is_refused(lerobot_folder, tmp_path):
    """huggingface_hub's cache: <repo>/snapshots/<revision>/<file> are links to <repo>/blobs/<hash>."""
    repo = tmp_path / 'models--user--policy'
    (repo / 'blobs').mkdir(parents=True)
    snapshot = repo / 'snapshots' / 'abc123'
    snapshot.mkdir(parents=True)
    for number, name in enumerate(sorted(os.listdir(lerobot_folder))):
        os.rename(shutil.copy(os.path.join(lerobot_folder, name), repo / 'blobs'), repo / 'blobs' / str(number))
        (snapshot / name).symlink_to(f'../../blobs/{number}')
    read = read_lerobot_checkpoint(str(snapshot))
    assert read['policy_config'] == read_lerobot_checkpoint(lerobot_folder)['policy_config']
    (snapshot / 'config.json').unlink()
    (snapshot / 'config.json').symlink_to(os.path.join(lerobot_folder, 'config.json'))  # out of the tree
    with pytest.raises(LeRobotFormatError, match=f"{snapshot}: the file 'config.json' points outside"):
        read_lerobot_checkpoint(str(snapshot))


def test_a_v2_episodes_line_nested_200000_deep_is_named(tmp_path):
    from formats.lerobot import LeRobotEpisodes
    meta = tmp_path / 'meta'
    meta.mkdir()
    feature = {'dtype': 'float32', 'shape': [2], 'names': None}
    (meta / 'info.json').write_text(json.dumps({
        'codebase_version': 'v2.1', 'fps': 50, 'total_episodes': 1, 'total_frames': 1, 'chunks_size': 1000,
        'features': {'observation.state': feature, 'action': feature},
        'data_path': 'data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet'}))
    (meta / 'episodes.jsonl').write_text(DEEP_JSON + '\n')
    with pytest.raises(LeRobotFormatError, match=r'episodes.jsonl: line 1 is not an episode record'):
        LeRobotEpisodes(str(tmp_path))
