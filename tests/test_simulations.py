"""A simulated task on another robot, added from one file: a two-joint pointer that reaches a goal,
registered as a simulation here, is recorded by record_sim_episodes, trained on and evaluated by
imitate_episodes with no other file touched; and the built-in tasks find their simulation by its
registration, never by their name."""
import collections
import os

import numpy as np
import pytest
from dm_control import mujoco
from dm_control.rl import control
from dm_control.suite import base

import imitate_episodes
import recording.sim
import simulation
from common.sim_cameras import CameraSet, resolve_cameras
from constants import SIM_TASK_CONFIGS
from simulation import DemoSettings, Simulation, register_simulation, simulation_of
from tests.helpers import tiny_model_flags

pytestmark = pytest.mark.usefixtures('one_thread')

TASK = 'sim_toy_reach'
STEPS = 30
SIZE = (24, 32)
POINTER_XML = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <light pos="0 0 2"/>
    <camera name="above" pos="0 0 1.2"/>
    <geom name="floor" type="plane" size="1 1 0.1" rgba=".8 .8 .8 1"/>
    <body name="pointer" pos="0 0 0.05">
      <joint name="x" type="slide" axis="1 0 0" range="-0.5 0.5" damping="20"/>
      <joint name="y" type="slide" axis="0 1 0" range="-0.5 0.5" damping="20"/>
      <geom name="tip" type="sphere" size="0.03" rgba="1 0 0 1"/>
    </body>
    <body name="goal" mocap="true" pos="0.2 0.2 0.05">
      <geom type="sphere" size="0.03" contype="0" conaffinity="0" rgba="0 1 0 1"/>
    </body>
  </worldbody>
  <actuator>
    <position joint="x" kp="400"/>
    <position joint="y" kp="400"/>
  </actuator>
</mujoco>
"""


class ReachTask(base.Task):
    """Position control of the pointer; reward 4 within 3 cm of the goal, fewer stages farther away."""
    max_reward = 4

    def __init__(self, cameras, image_size, random=None):
        super().__init__(random=random)
        self.cameras, self.image_size, self.goal, self._camera_set = cameras, image_size, None, None

    def set_object_pose(self, pose):
        self.goal = np.asarray(pose, dtype=np.float64)

    def initialize_episode(self, physics):
        goal = sample_goal(self.random) if self.goal is None else self.goal
        physics.data.qpos[:] = 0
        physics.data.mocap_pos[0] = goal[:3]
        self.goal = None
        super().initialize_episode(physics)

    def get_observation(self, physics):
        if self._camera_set is None:
            self._camera_set = CameraSet(physics, self.cameras, self.image_size)
        return collections.OrderedDict(qpos=physics.data.qpos.copy(), qvel=physics.data.qvel.copy(),
                                       env_state=physics.data.mocap_pos[0].copy(), images=self._camera_set.render())

    def get_reward(self, physics):
        distance = np.linalg.norm(physics.data.qpos - physics.data.mocap_pos[0, :2])
        return int(max(0, 4 - distance // 0.03))


def sample_goal(rng):
    """The goal's pose (7,): somewhere 10 to 25 cm from the start, upright."""
    return np.concatenate([rng.uniform(0.1, 0.25, size=2), [0.05, 1.0, 0.0, 0.0, 0.0]])


def make_env(task_name, camera_names, image_size, seed, shadows):
    physics = mujoco.Physics.from_xml_string(POINTER_XML)
    cameras = resolve_cameras(physics, ['above'] if camera_names is None else camera_names)
    task = ReachTask(cameras, image_size, random=np.random.RandomState(seed))
    return control.Environment(physics, task, time_limit=10, control_timestep=0.02, flat_observation=False)


class StraightLine:
    """The scripted demonstration: the pointer's target moves to the goal in a straight line, then stays."""

    def __init__(self, env, settings):
        self.env, self.settings = env, settings

    def rollout(self, rng):
        goal = sample_goal(rng)
        steps = self.settings.episode_len + 1
        share = np.minimum(1.0, np.arange(1, steps + 1) / (steps / 2))[:, None]  # (T + 1, 1)
        targets = share * goal[:2]  # (T + 1, 2)
        self.env.task.set_object_pose(goal)
        self.env.reset()
        return targets, goal, [self.env.step(target).reward for target in targets]


def check_cameras(task_name, camera_names):
    if set(camera_names) - {'above'}:
        raise ValueError(f'{task_name} has one camera, above')


POINTER = Simulation(make_env=make_env, sample_object_pose=lambda task_name, rng: sample_goal(rng),
                     check_camera_names=check_cameras, make_demonstrator=lambda task, env, s: StraightLine(env, s),
                     check_scripted=lambda task_name: None, state_dim=2, view_camera='above')


@pytest.fixture
def pointer_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(simulation, '_SIMULATIONS', dict(simulation._SIMULATIONS))
    register_simulation('pointer', POINTER)
    monkeypatch.setitem(SIM_TASK_CONFIGS, TASK, {
        'dataset_dir': str(tmp_path / 'data' / TASK), 'num_episodes': 4, 'episode_len': STEPS,
        'camera_names': ['above'], 'simulation': 'pointer', 'reward_stages': ('near', 'nearer', 'close', 'there')})
    return tmp_path


def test_a_registered_simulation_records_trains_and_evaluates(pointer_task, capsys):
    results = recording.sim.main({'task_name': TASK, 'image_size': list(SIZE), 'num_workers': 1})
    assert len(results) == 4 and all(r['success'] for r in results)
    from formats.hdf5 import read_episode
    episode = read_episode(os.path.join(pointer_task, 'data', TASK, 'episode_0.hdf5'))
    assert episode.qpos.shape == (STEPS, 2) and episode.images['above'].shape == (STEPS, *SIZE, 3)
    ckpt = str(pointer_task / 'ckpt')
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
        ['--task_name', TASK, '--policy_class', 'ACT', '--ckpt_dir', ckpt, '--batch_size', '2', '--num_epochs', '2',
         *tiny_model_flags()])))
    imitate_episodes.main(vars(imitate_episodes.build_parser().parse_args(
        ['--eval', '--ckpt_dir', ckpt, '--num_rollouts', '1', '--no_video', '--device', 'cpu'])))
    assert 'policy_best.ckpt: success_rate=' in capsys.readouterr().out


def test_each_built_in_task_names_its_simulation():
    assert simulation_of('sim_insertion').view_camera == 'angle'
    assert simulation_of('sim_so101_pick_place').state_dim == 6
    assert simulation_of('sim_transfer_cube_mine').state_dim == 14  # NOTE(faithful): a name alone is ALOHA's
    with pytest.raises(ValueError, match="unknown simulation 'mars'.*aloha, so101"):
        simulation.get_simulation('mars')


def test_settings_reach_the_demonstrator(pointer_task):
    recorder = recording.sim.EpisodeRecorder(TASK, ['above'], SIZE, episode_len=6)
    assert recorder.demonstrator.settings == DemoSettings(6, SIZE, False, False, True)
    targets, goal, rewards = recorder.demonstrator.rollout(np.random.default_rng(0))
    assert targets.shape == (7, 2) and len(rewards) == 7 and np.allclose(targets[-1], goal[:2])
