"""End-effector (mocap) version of the ALOHA simulation, used to script demonstrations.

Action (16,): per arm [xyz (3), quaternion wxyz (4), gripper normalised 0..1 (1)], left then right.
Each gripper link is welded to a mocap body that follows the commanded pose. The observation is
the joint environment's (sim_env.py) plus:
    mocap_pose_left, mocap_pose_right  (7,) current mocap poses (the scripted policy starts there)
    gripper_ctrl                       (4,) finger position targets (replayed in joint space)
Objects and rewards are those of the joint environment; a new pose is drawn at every reset unless
one is handed over with env.task.set_object_pose (sim_env.BOX_POSE is not read here).
"""
import numpy as np

import sim_env
from constants import PUPPET_GRIPPER_POSITION_CLOSE, PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN

### Fixed settings
# Mocap poses matching the gripper links at START_ARM_POSE (read from the xpos / xquat of
# 'vx300s_{left,right}/gripper_link' after a reset), as in the original.
START_MOCAP_POS_LEFT = (-0.31718881, 0.5, 0.29525084)
START_MOCAP_POS_RIGHT = (0.31718881, 0.49999888, 0.29525084)
START_MOCAP_QUAT = (1.0, 0.0, 0.0, 0.0)
POSE_DIM = 7  # xyz + quaternion


class BimanualViperXEETask:
    """Mixin over a joint-space task: mocap control, closed grippers at start, extra observations."""
    # The original's EE tasks draw a fresh object pose at every reset: the BOX_POSE[0] that its
    # record loop sets for the joint replay must not reach them.
    reads_legacy_box_pose = False

    def initialize_robots(self, physics):
        physics.data.qpos[:sim_env.ROBOT_QPOS_DIM] = sim_env.START_ARM_POSE
        np.copyto(physics.data.mocap_pos[0], START_MOCAP_POS_LEFT)
        np.copyto(physics.data.mocap_quat[0], START_MOCAP_QUAT)
        np.copyto(physics.data.mocap_pos[1], START_MOCAP_POS_RIGHT)
        np.copyto(physics.data.mocap_quat[1], START_MOCAP_QUAT)
        close = PUPPET_GRIPPER_POSITION_CLOSE
        np.copyto(physics.data.ctrl, [close, -close, close, -close])

    def before_step(self, action, physics):
        """(16,) action -> mocap poses and the 4 finger targets."""
        half = len(action) // 2
        for arm, arm_action in enumerate((action[:half], action[half:])):
            np.copyto(physics.data.mocap_pos[arm], arm_action[:3])
            np.copyto(physics.data.mocap_quat[arm], arm_action[3:POSE_DIM])
        left = PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(action[half - 1])
        right = PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(action[-1])
        np.copyto(physics.data.ctrl, [left, -left, right, -right])

    def get_observation(self, physics):
        obs = super().get_observation(physics)
        data = physics.data
        obs['mocap_pose_left'] = np.concatenate([data.mocap_pos[0], data.mocap_quat[0]])
        obs['mocap_pose_right'] = np.concatenate([data.mocap_pos[1], data.mocap_quat[1]])
        obs['gripper_ctrl'] = data.ctrl.copy()
        return obs


class TransferCubeEETask(BimanualViperXEETask, sim_env.TransferCubeTask):
    pass


class InsertionEETask(BimanualViperXEETask, sim_env.InsertionTask):
    pass


EE_TASKS = {sim_env.TransferCubeTask: TransferCubeEETask, sim_env.InsertionTask: InsertionEETask}


def make_ee_sim_env(task_name, camera_names=None, image_size=sim_env.DEFAULT_IMAGE_SIZE, seed=None,
                    shadows=True):
    """End-effector environment of a sim task; arguments as sim_env.make_sim_env."""
    _, xml_name, joint_task_cls = sim_env.task_family(task_name)
    physics = sim_env.load_physics(xml_name, shadows)
    cameras = sim_env.resolve_camera_names(physics, camera_names)
    task = EE_TASKS[joint_task_cls](cameras, image_size, random=np.random.RandomState(seed))
    return sim_env.make_environment(physics, task)
