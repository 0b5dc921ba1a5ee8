"""Joint-space SO-101 simulation in LeRobot's units, behind the same dm_control interface as the ALOHA
tasks (sim_env.py).

Action and qpos (6,): shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_roll in degrees about
the middle of each joint's range, gripper 0 (closed) .. 100 (open) over its range: the units of the
real arm's LeRobot calibration (real_robot/feetech.py), so a policy sees the same numbers in both.
Observation (OrderedDict):
    qpos      (6,)  positions;  qvel (6,) velocities (units/s)
    env_state (7,)  the cube's free-joint pose
    images    {camera: (H, W, 3) uint8}, only the cameras asked for ('front', 'wrist')
Reward stages (env.task.max_reward == 4): 1 the gripper touches the cube, 2 both jaws hold it off the
table, 3 held over the target area, 4 resting in the target area, released (success).

The cube pose is handed over as in sim_env: env.task.set_object_pose(pose (7,)) for the next reset,
otherwise reset samples one from scene.CUBE_RANGES with the task's random state.
"""
import collections

import numpy as np
from dm_control import mujoco
from dm_control.mujoco import wrapper
from dm_control.rl import control
from dm_control.suite import base

from common.sim_cameras import CameraSet, resolve_cameras
from constants import IMAGE_HW
from so101_sim import scene
from tasks import so_feature_names

TIME_LIMIT = 30  # seconds of simulated time before dm_control ends an episode
STATE_DIM = len(scene.JOINTS)
# LeRobot's degrees are (raw - mid) * 360 / 4095 of a 4096-step encoder
DEGREES_PER_RADIAN = 4096 / (2 * np.pi) * 360 / 4095
GRIPPER_SPAN = 100.0  # the gripper's units over its range
START_POSE = (0.0, -12.1, 11.4, 90.7, 2.7, 30.0)  # units: the gripper 8 cm above the table, pointing down
CAMERA_NAMES = tuple(scene.CAMERAS)
FEATURE_NAMES = so_feature_names(1)  # LeRobot's names of the arm's values: shoulder_pan.pos, ...


class Units:
    """Conversions between joint radians and LeRobot's units, from the model's joint ranges."""

    def __init__(self, model):
        ids = [model.joint(name).id for name in scene.JOINTS]
        self.low, self.high = model.jnt_range[ids].T  # (6,) radians
        self.gripper = np.arange(STATE_DIM) == STATE_DIM - 1  # (6,) which value is the gripper's

    def to_units(self, radians):
        fraction = (radians - self.low) / (self.high - self.low)
        return np.where(self.gripper, GRIPPER_SPAN * fraction, radians * DEGREES_PER_RADIAN)

    def to_radians(self, units):
        gripper = self.low + np.clip(units, 0, GRIPPER_SPAN) / GRIPPER_SPAN * (self.high - self.low)
        return np.clip(np.where(self.gripper, gripper, units / DEGREES_PER_RADIAN), self.low, self.high)

    def velocity_to_units(self, radians_per_s):
        return np.where(self.gripper, GRIPPER_SPAN * radians_per_s / (self.high - self.low),
                        radians_per_s * DEGREES_PER_RADIAN)


def sample_cube_pose(rng=np.random):
    """Random cube pose (7,): on the table within scene.CUBE_RANGES, turned about the vertical."""
    ranges = scene.CUBE_RANGES
    x, y, yaw = (rng.uniform(*ranges[k]) for k in ('x', 'y', 'yaw'))
    return np.array([x, y, scene.CUBE_HALF, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def cube_yaw(pose):
    """The cube's turn about the vertical (rad) from its pose (7,)."""
    w, z = pose[3], pose[6]
    return 2 * np.arctan2(z, w)


def in_target(xy):
    return np.hypot(*(np.asarray(xy) - scene.TARGET_CENTRE)) <= scene.TARGET_RADIUS


class SO101PickPlaceTask(base.Task):
    """Joint position control of one SO-101 arm; reward stages as in the module docstring."""
    max_reward = 4

    def __init__(self, cameras=None, image_size=IMAGE_HW, random=None):
        super().__init__(random=random)
        self.cameras = dict(cameras or {})
        self.image_size = tuple(image_size)
        self._camera_set = None
        self._next_pose = None
        self.units = None  # set when the physics is known

    def set_object_pose(self, pose):
        """Use `pose` (7,) for the next reset."""
        self._next_pose = np.asarray(pose, dtype=np.float64).reshape(-1)

    def initialize_episode(self, physics):
        if self.units is None:
            self.units = Units(physics.model.ptr)
        start = self.units.to_radians(np.asarray(START_POSE))
        physics.data.qpos[:STATE_DIM] = start
        np.copyto(physics.data.ctrl, start)
        pose = sample_cube_pose(self.random) if self._next_pose is None else self._next_pose
        self._next_pose = None
        if pose.shape != (7,):
            raise ValueError(f'cube pose must have 7 values (xyz, quaternion wxyz), got {pose.shape}')
        physics.data.qpos[STATE_DIM:] = pose
        super().initialize_episode(physics)

    def before_step(self, action, physics):
        """(6,) action in units -> the six position actuators' targets (radians, clamped to the ranges)."""
        action = np.asarray(action, dtype=float)
        if action.shape != (STATE_DIM,):
            raise ValueError(f'SO-101 action of shape {action.shape}: expected ({STATE_DIM},) ({", ".join(scene.JOINTS)})')
        super().before_step(self.units.to_radians(action), physics)

    def get_observation(self, physics):
        obs = collections.OrderedDict()
        obs['qpos'] = self.units.to_units(physics.data.qpos[:STATE_DIM].copy())
        obs['qvel'] = self.units.velocity_to_units(physics.data.qvel[:STATE_DIM].copy())
        obs['env_state'] = physics.data.qpos[STATE_DIM:].copy()
        if self._camera_set is None:
            self._camera_set = CameraSet(physics, self.cameras, self.image_size)
        obs['images'] = self._camera_set.render()
        return obs

    def get_reward(self, physics):
        return pick_place_reward(cube_contacts(physics), physics.data.qpos[STATE_DIM:STATE_DIM + 2])


def cube_contacts(physics):
    """The names of the bodies touching the cube ('table' for the table)."""
    model, contact = physics.model, physics.data.contact
    cube = model.name2id('cube', 'geom')
    found = set()
    for g1, g2 in zip(contact.geom1, contact.geom2):
        if cube in (g1, g2):
            other = g2 if g1 == cube else g1
            found.add('table' if model.id2name(other, 'geom') == 'table' else
                      model.id2name(model.geom_bodyid[other], 'body'))
    return found


def pick_place_reward(touching, cube_xy):
    """Stage 0..4 from the bodies touching the cube and where it is."""
    fixed_jaw, moving_jaw = 'gripper' in touching, 'moving_jaw_so101_v1' in touching
    on_table = 'table' in touching
    held = fixed_jaw and moving_jaw and not on_table
    reward = 0
    if fixed_jaw or moving_jaw:
        reward = 1
    if held:
        reward = 2
    if held and in_target(cube_xy):
        reward = 3
    if on_table and in_target(cube_xy) and not (fixed_jaw or moving_jaw):
        reward = 4
    return reward


def make_so101_env(camera_names=None, image_size=IMAGE_HW, seed=None, shadows=True):
    """The SO-101 pick-and-place environment; arguments as sim_env.make_sim_env (default cameras: front, wrist)."""
    physics = mujoco.Physics.from_model(wrapper.MjModel(scene.build_model(shadows)))
    cameras = resolve_cameras(physics, CAMERA_NAMES if camera_names is None else camera_names)
    task = SO101PickPlaceTask(cameras, image_size, random=np.random.RandomState(seed))
    return control.Environment(physics, task, time_limit=TIME_LIMIT, control_timestep=1 / scene.CONTROL_HZ,
                               n_sub_steps=None, flat_observation=False)
