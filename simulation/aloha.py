"""The original's simulation: two ViperX arms on the ALOHA tasks (sim_env.py in joint space,
ee_sim_env.py driven by mocap), and its scripted demonstrations (scripted_policy.py), which move the
end effectors and are recorded as the joint trajectory they produce."""
import numpy as np

import sim_env
from common.media import OnscreenView
from constants import PUPPET_GRIPPER_POSITION_NORMALIZE_FN
from ee_sim_env import make_ee_sim_env
from scripted_policy import get_scripted_policy_class
from simulation import Simulation

VIEW_CAMERA = 'angle'  # shown with --onscreen_render
EE_PAUSE = 0.002  # seconds between onscreen frames of the EE rollout
LEFT_GRIPPER, RIGHT_GRIPPER = sim_env.ARM_DOF, 2 * sim_env.ARM_DOF + 1  # gripper slots in qpos/action


def replace_gripper_with_commands(qpos, gripper_ctrl):
    """Joint trajectory to replay: (T + 1, 14) qpos with the grippers set to their normalised
    commands, taken from the (T + 1, 4) finger targets of the EE rollout."""
    joint_traj = qpos.copy()
    joint_traj[:, LEFT_GRIPPER] = PUPPET_GRIPPER_POSITION_NORMALIZE_FN(gripper_ctrl[:, 0])
    joint_traj[:, RIGHT_GRIPPER] = PUPPET_GRIPPER_POSITION_NORMALIZE_FN(gripper_ctrl[:, 2])
    return joint_traj


class EndEffectorDemonstrator:
    """The original's scripted policy of a task, run in the end-effector environment."""

    def __init__(self, task_name, settings):
        self.task_name, self.settings = task_name, settings
        self.policy_cls = get_scripted_policy_class(task_name)
        view = [VIEW_CAMERA] if settings.onscreen else []
        self.ee_env = make_ee_sim_env(task_name, camera_names=view, image_size=settings.image_size,
                                      shadows=settings.shadows)

    def rollout(self, rng):
        """Scripted EE rollout -> (joint trajectory (T + 1, 14), object pose, the T rewards)."""
        self.ee_env.task.set_object_pose(sim_env.sample_object_pose(self.task_name, rng))
        ts = self.ee_env.reset()
        object_pose = ts.observation['env_state']  # the replay starts from the same objects
        policy = self.policy_cls(self.settings.inject_noise, rng=rng)
        view = OnscreenView(EE_PAUSE) if self.settings.onscreen else None
        if view:
            view.show(ts.observation['images'][VIEW_CAMERA])
        qpos, ctrl, rewards = [ts.observation['qpos']], [ts.observation['gripper_ctrl']], []
        for _ in range(self.settings.episode_len):
            ts = self.ee_env.step(policy(ts))
            qpos.append(ts.observation['qpos'])
            ctrl.append(ts.observation['gripper_ctrl'])
            rewards.append(ts.reward)
            if view:
                view.show(ts.observation['images'][VIEW_CAMERA])
        if view:
            view.close()
        trajectory = replace_gripper_with_commands(np.array(qpos), np.array(ctrl))
        return trajectory, object_pose, rewards


def check_scripted(task_name):
    get_scripted_policy_class(task_name)


ALOHA = Simulation(
    make_env=sim_env.make_sim_env,
    sample_object_pose=sim_env.sample_object_pose,
    check_camera_names=sim_env.check_camera_names,
    make_demonstrator=lambda task_name, env, settings: EndEffectorDemonstrator(task_name, settings),
    check_scripted=check_scripted,
    state_dim=sim_env.STATE_DIM,
    view_camera=VIEW_CAMERA,
)
