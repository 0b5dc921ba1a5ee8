"""The SO-101 simulation (so101_sim/) as the sim tasks see it: its environment, cube poses, cameras and
scripted demonstrations, which run in joint space (inverse kinematics) in the environment they are
recorded in."""
from simulation import Simulation
from so101_sim.env import CAMERA_NAMES, STATE_DIM, make_so101_env, sample_cube_pose
from so101_sim.scripted import Kinematics, scripted_episode

VIEW_CAMERA = 'front'  # shown with --onscreen_render


class JointSpaceDemonstrator:
    def __init__(self, env, settings):
        self.env, self.settings, self.kinematics = env, settings, Kinematics()

    def rollout(self, rng):
        """Scripted rollout -> (its T + 1 joint targets (T + 1, 6), cube pose, the T + 1 rewards)."""
        pose = sample_cube_pose(rng)
        actions, rewards = scripted_episode(self.env, self.kinematics, pose, self.settings.episode_len + 1,
                                            inject_noise=self.settings.inject_noise, rng=rng)
        return actions, pose, rewards


def check_cameras(task_name, camera_names):
    unknown = [name for name in camera_names if name not in CAMERA_NAMES]
    if unknown:
        raise ValueError(f"unknown camera '{unknown[0]}': the sim model of {task_name} has {', '.join(CAMERA_NAMES)}")


SO101 = Simulation(
    make_env=lambda task_name, *args: make_so101_env(*args),
    sample_object_pose=lambda task_name, rng: sample_cube_pose(rng),
    check_camera_names=check_cameras,
    make_demonstrator=lambda task_name, env, settings: JointSpaceDemonstrator(env, settings),
    check_scripted=lambda task_name: None,
    state_dim=STATE_DIM,
    view_camera=VIEW_CAMERA,
)
