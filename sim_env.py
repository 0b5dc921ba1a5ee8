"""Joint-space ALOHA simulation: bimanual ViperX arms on MuJoCo 3 through dm_control.

Action (14,): [left arm joints (6), left gripper (1), right arm joints (6), right gripper (1)],
arm joints absolute in rad, grippers normalised 0 (closed) .. 1 (open).
Observation (OrderedDict):
    qpos      (14,)  arm joints, grippers normalised as in the action
    qvel      (14,)  joint velocities, gripper velocities normalised
    env_state (7,) or (14,)  free-joint poses of the objects (box, or peg then socket)
    images    {camera: (H, W, 3) uint8}, only the cameras asked for
Reward: the original's contact stages 0..4, `env.task.max_reward == 4`.

The object pose is handed over explicitly: `env.task.set_object_pose(pose)` makes the next
reset use `pose`; otherwise reset samples one from the original ranges with the task's random state.
Sim code does not import torch.
"""
import collections
import importlib.util
import os
import pathlib
import warnings

os.environ.setdefault('MUJOCO_GL', 'egl')  # headless rendering unless the user chose otherwise

import numpy as np  # noqa: E402
from dm_control import mujoco  # noqa: E402
from dm_control.rl import control  # noqa: E402
from dm_control.suite import base  # noqa: E402

from common.sim_cameras import CameraSet, resolve_cameras  # noqa: E402,F401 (CameraSet: the recorder's)
from constants import (DT, IMAGE_HW, START_ARM_POSE, PUPPET_GRIPPER_POSITION_NORMALIZE_FN,  # noqa: E402
                       PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN, PUPPET_GRIPPER_VELOCITY_NORMALIZE_FN)
from tasks import sim_task_names  # noqa: E402

### Fixed simulation settings
TIME_LIMIT = 20  # seconds of simulated time per episode before dm_control ends it (1000 steps)
DEFAULT_IMAGE_SIZE = IMAGE_HW  # (H, W) of rendered frames, as in the original
DEFAULT_CAMERA_NAMES = ('top', 'angle', 'vis')  # what the original rendered on every step
CAMERA_ALIASES = {'vis': 'front_close'}  # observation name -> MuJoCo camera name
# Side of the shadow map in texels (the robot assets, and so the original, ask for 4096). 2048 costs
# markedly less CPU with a software rasteriser and changes only pixels at shadow edges, about as many
# as differ between MuJoCo releases (bench/render_cost.py; figures in bench/RESULTS.md).
SHADOW_MAP_SIZE = 2048
ROBOT_QPOS_DIM = len(START_ARM_POSE)  # robot joints come first in qpos, object free joints after
HALF_QPOS = ROBOT_QPOS_DIM // 2  # per arm: 6 joints + 2 fingers
ARM_DOF = HALF_QPOS - 2  # arm joints per arm, without the fingers
STATE_DIM = 2 * (ARM_DOF + 1)  # qpos / action size: per arm its joints and one gripper value
BOX_RANGES = {'x': (0.0, 0.2), 'y': (0.4, 0.6), 'z': (0.05, 0.05)}  # cube position range (m)
PEG_RANGES = {'x': (0.1, 0.2), 'y': (0.4, 0.6), 'z': (0.05, 0.05)}
SOCKET_RANGES = {'x': (-0.2, -0.1), 'y': (0.4, 0.6), 'z': (0.05, 0.05)}
IDENTITY_QUAT = (1.0, 0.0, 0.0, 0.0)  # objects start upright
LEFT_FINGER = 'vx300s_left/10_left_gripper_finger'
RIGHT_FINGER = 'vx300s_right/10_right_gripper_finger'
SOCKET_GEOMS = ('socket-1', 'socket-2', 'socket-3', 'socket-4')

# Legacy hand-off of the original (`sim_env.BOX_POSE[0] = pose` before `env.reset()`); still
# honoured with a warning. New code calls env.task.set_object_pose(pose).
BOX_POSE = [None]


############################ Assets and MuJoCo 3 corrections ############################

def asset_path(filename):
    """Path of an ALOHA robot asset shipped in the gym-aloha wheel (its package is not imported)."""
    spec = importlib.util.find_spec('gym_aloha')
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the ALOHA robot assets come from the 'gym-aloha' package: "
                          "pip install -r requirements.txt")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'assets' / filename
    if not path.is_file():
        raise FileNotFoundError(f"robot asset {path} is missing from the installed gym-aloha")
    return str(path)


def apply_mujoco3_corrections(model):
    """Make MuJoCo 3 behave like the 2.3.7 the scripted demonstrations were written for.

    1. Weld constraints (mocap -> gripper) weigh rotation by torquescale since 3.0; the value
       sqrt(rotational / translational inverse weight) restores the old stiffness.
    2. Multi-point convex collision (default since 3.8) lifts the socket; disable it.
    """
    for i in np.flatnonzero(model.eq_type == int(mujoco.mjtEq.mjEQ_WELD)):
        bodies = [model.eq_obj1id[i], model.eq_obj2id[i]]
        trans_invweight, rot_invweight = model.body_invweight0[bodies].sum(axis=0)
        model.eq_data[i, 10] = np.sqrt(rot_invweight / trans_invweight)
    multiccd = getattr(mujoco.mjtDisableBit, 'mjDSBL_MULTICCD', None)
    if multiccd is not None:
        model.opt.disableflags |= int(multiccd)


def load_physics(xml_name, shadows=True):
    """dm_control Physics of a gym-aloha asset with the MuJoCo 3 corrections applied.

    shadows=False: no light casts a shadow. A frame then costs well under half the CPU with a
    software rasteriser, but the images differ from the original's wherever a shadow falls.
    """
    physics = mujoco.Physics.from_xml_path(asset_path(xml_name))
    apply_mujoco3_corrections(physics.model.ptr)
    physics.model.vis.quality.shadowsize = SHADOW_MAP_SIZE  # read when the first camera renders
    if not shadows:
        physics.model.light_castshadow[:] = 0
    return physics


############################ Object poses ############################

def _sample_pose(ranges, rng):
    low = np.array([ranges[k][0] for k in 'xyz'])
    high = np.array([ranges[k][1] for k in 'xyz'])
    return np.concatenate([rng.uniform(low, high), IDENTITY_QUAT])


def sample_box_pose(rng=np.random):
    """Random cube pose (7,): xyz in the original range, upright quaternion."""
    return _sample_pose(BOX_RANGES, rng)


def sample_insertion_pose(rng=np.random):
    """Random (peg pose (7,), socket pose (7,)) in the original ranges."""
    return _sample_pose(PEG_RANGES, rng), _sample_pose(SOCKET_RANGES, rng)


def sample_object_pose(task_name, rng=np.random):
    """Flat object pose for `env.task.set_object_pose`: (7,) cube or (14,) peg + socket."""
    return np.concatenate(_task_class(task_name).sample_pose(rng), axis=None)


############################ Observation and reward helpers ############################
# Shared with the end-effector environment (ee_sim_env.py).

def get_qpos(physics):
    """(14,) arm joints and normalised gripper positions of both arms."""
    qpos = physics.data.qpos
    left, right = qpos[:HALF_QPOS], qpos[HALF_QPOS:ROBOT_QPOS_DIM]
    return np.concatenate([left[:ARM_DOF], [PUPPET_GRIPPER_POSITION_NORMALIZE_FN(left[ARM_DOF])],
                           right[:ARM_DOF], [PUPPET_GRIPPER_POSITION_NORMALIZE_FN(right[ARM_DOF])]])


def get_qvel(physics):
    """(14,) arm joint velocities and normalised gripper velocities of both arms."""
    qvel = physics.data.qvel
    left, right = qvel[:HALF_QPOS], qvel[HALF_QPOS:ROBOT_QPOS_DIM]
    return np.concatenate([left[:ARM_DOF], [PUPPET_GRIPPER_VELOCITY_NORMALIZE_FN(left[ARM_DOF])],
                           right[:ARM_DOF], [PUPPET_GRIPPER_VELOCITY_NORMALIZE_FN(right[ARM_DOF])]])


def get_env_state(physics):
    """Free-joint poses of the objects, (7,) per object, copied."""
    return physics.data.qpos[ROBOT_QPOS_DIM:].copy()


def contact_pairs(physics):
    """Set of frozenset({geom name, geom name}) for every active contact."""
    contact = physics.data.contact
    names = physics.model.id2name
    return {frozenset((names(g1, 'geom'), names(g2, 'geom')))
            for g1, g2 in zip(contact.geom1, contact.geom2)}


def _touching(pairs, a, b):
    return frozenset((a, b)) in pairs


def transfer_cube_reward(pairs):
    """Stages: 1 right gripper touches the cube, 2 lifted it, 3 left touches, 4 left holds it up.

    NOTE(faithful): the original compared ordered (geom1, geom2) name pairs; MuJoCo reports these
    pairs in one fixed order, so an unordered test gives the same stages and survives reordering.
    """
    touch_left = _touching(pairs, 'red_box', LEFT_FINGER)
    touch_right = _touching(pairs, 'red_box', RIGHT_FINGER)
    touch_table = _touching(pairs, 'red_box', 'table')
    reward = 0
    if touch_right:
        reward = 1
    if touch_right and not touch_table:  # lifted
        reward = 2
    if touch_left:  # attempted transfer
        reward = 3
    if touch_left and not touch_table:  # successful transfer
        reward = 4
    return reward


def insertion_reward(pairs):
    """Stages: 1 both grippers touch, 2 both lifted, 3 peg touches socket in the air, 4 peg touches pin."""
    touch_left = any(_touching(pairs, s, LEFT_FINGER) for s in SOCKET_GEOMS)
    touch_right = _touching(pairs, 'red_peg', RIGHT_FINGER)
    peg_on_table = _touching(pairs, 'red_peg', 'table')
    socket_on_table = any(_touching(pairs, s, 'table') for s in SOCKET_GEOMS)
    peg_in_socket = any(_touching(pairs, 'red_peg', s) for s in SOCKET_GEOMS)
    lifted = not peg_on_table and not socket_on_table
    reward = 0
    if touch_left and touch_right:  # touch both
        reward = 1
    if touch_left and touch_right and lifted:  # grasp both
        reward = 2
    if peg_in_socket and lifted:  # peg and socket touching
        reward = 3
    if _touching(pairs, 'red_peg', 'pin'):  # successful insertion
        reward = 4
    return reward


############################ Rendering ############################

def resolve_camera_names(physics, camera_names):
    """Map observation camera names to MuJoCo camera names (None: the original's top, angle, vis);
    error on unknown ones."""
    return resolve_cameras(physics, DEFAULT_CAMERA_NAMES if camera_names is None else camera_names, CAMERA_ALIASES)


def check_camera_names(task_name, camera_names):
    """ValueError naming the task's cameras when one of camera_names is not among them."""
    resolve_camera_names(load_physics(task_family(task_name)[0]), camera_names)


############################ Tasks ############################

class BimanualViperXTask(base.Task):
    """Joint position control of both arms; subclasses give the objects and the reward."""
    max_reward = 4
    reward_fn = None  # pairs -> stage
    sample_pose = None  # rng -> pose or tuple of poses
    reads_legacy_box_pose = True  # the original's joint tasks took their objects from BOX_POSE[0]

    def __init__(self, cameras=None, image_size=DEFAULT_IMAGE_SIZE, random=None):
        super().__init__(random=random)
        self.cameras = dict(cameras or {})  # {observation name: MuJoCo camera name} to render
        self.image_size = tuple(image_size)  # (H, W)
        self._camera_set = None  # built on the first observation, when the physics is known
        self._next_object_pose = None

    def set_object_pose(self, pose):
        """Use `pose` (flat, 7 per object) for the next reset."""
        self._next_object_pose = np.asarray(pose, dtype=np.float64).reshape(-1)

    def _take_object_pose(self):
        if self._next_object_pose is not None:
            pose, self._next_object_pose = self._next_object_pose, None
            return pose
        if self.reads_legacy_box_pose and BOX_POSE[0] is not None:
            warnings.warn('sim_env.BOX_POSE is deprecated: call env.task.set_object_pose(pose) '
                          'before env.reset()', DeprecationWarning, stacklevel=3)
            return np.asarray(BOX_POSE[0], dtype=np.float64).reshape(-1)
        return np.concatenate(self.sample_pose(self.random), axis=None)

    def initialize_robots(self, physics):
        physics.data.qpos[:ROBOT_QPOS_DIM] = START_ARM_POSE
        np.copyto(physics.data.ctrl, START_ARM_POSE)

    def initialize_episode(self, physics):
        """Runs inside dm_control's reset_context: robots to the start pose, objects placed."""
        self.initialize_robots(physics)
        pose = self._take_object_pose()
        expected = physics.model.nq - ROBOT_QPOS_DIM
        if pose.shape != (expected,):
            raise ValueError(f'object pose must have {expected} values (7 per object), got {pose.shape}')
        physics.data.qpos[ROBOT_QPOS_DIM:] = pose
        super().initialize_episode(physics)

    def before_step(self, action, physics):
        """(14,) joint action -> 16 actuator targets (each gripper drives two mirrored fingers)."""
        left_grip = PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(action[ARM_DOF])
        right_grip = PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(action[2 * ARM_DOF + 1])
        env_action = np.concatenate([action[:ARM_DOF], [left_grip, -left_grip],
                                     action[ARM_DOF + 1:2 * ARM_DOF + 1], [right_grip, -right_grip]])
        super().before_step(env_action, physics)

    def get_observation(self, physics):
        obs = collections.OrderedDict()
        obs['qpos'] = get_qpos(physics)
        obs['qvel'] = get_qvel(physics)
        obs['env_state'] = get_env_state(physics)
        if self._camera_set is None:
            self._camera_set = CameraSet(physics, self.cameras, self.image_size)
        obs['images'] = self._camera_set.render()
        return obs

    def get_reward(self, physics):
        return self.reward_fn(contact_pairs(physics))


class TransferCubeTask(BimanualViperXTask):
    reward_fn = staticmethod(transfer_cube_reward)
    sample_pose = staticmethod(sample_box_pose)


class InsertionTask(BimanualViperXTask):
    reward_fn = staticmethod(insertion_reward)
    sample_pose = staticmethod(sample_insertion_pose)


# task family (substring of the task name, as in the original) -> (joint xml, EE xml, task class)
TASK_FAMILIES = {
    'sim_transfer_cube': ('bimanual_viperx_transfer_cube.xml',
                          'bimanual_viperx_end_effector_transfer_cube.xml', TransferCubeTask),
    'sim_insertion': ('bimanual_viperx_insertion.xml',
                      'bimanual_viperx_end_effector_insertion.xml', InsertionTask),
}


def task_family(task_name):
    """(joint xml, EE xml, joint task class) for a sim task name; ValueError listing known tasks."""
    for prefix, family in TASK_FAMILIES.items():
        if prefix in task_name:
            return family
    raise ValueError(f"unknown sim task '{task_name}': known sim tasks are {sim_task_names()} (sim_env builds "
                     f"the ALOHA ones; simulation.make_sim_env builds any)")


def _task_class(task_name):
    return task_family(task_name)[2]


def make_environment(physics, task):
    """dm_control Environment stepping at DT with the physics timestep's number of substeps."""
    return control.Environment(physics, task, time_limit=TIME_LIMIT, control_timestep=DT,
                               n_sub_steps=None, flat_observation=False)


def make_sim_env(task_name, camera_names=None, image_size=DEFAULT_IMAGE_SIZE, seed=None, shadows=True):
    """Joint-space environment of an ALOHA sim task (simulation.make_sim_env: of any sim task).

    camera_names: cameras rendered into obs['images'] (None: the original's top, angle, vis; [] renders
    none). image_size: (H, W) of the frames. seed: the task's own random state,
    used for object poses when none was set with env.task.set_object_pose. shadows: as load_physics.
    """
    xml_name, _, task_cls = task_family(task_name)
    physics = load_physics(xml_name, shadows)
    cameras = resolve_camera_names(physics, camera_names)
    task = task_cls(cameras, image_size, random=np.random.RandomState(seed))
    return make_environment(physics, task)
