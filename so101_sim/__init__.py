"""SO-101 in simulation: the arm's MuJoCo model in a pick-and-place scene (scene.py), the joint-space
task in LeRobot's units (env.py) and its scripted demonstrations (scripted.py). sim_env.make_sim_env
builds its environment for the sim tasks whose names begin with TASK_PREFIX."""
import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # headless rendering unless the user chose otherwise, as sim_env

TASK_PREFIX = 'sim_so101'


def is_so101_task(task_name):
    return task_name.startswith(TASK_PREFIX)
