"""SO-101 in simulation: the arm's MuJoCo model in a pick-and-place scene (scene.py), the joint-space
task in LeRobot's units (env.py) and its scripted demonstrations (scripted.py), registered as the
simulation 'so101' (simulation/so101.py), which the sim tasks that name it run in."""
import os

os.environ.setdefault('MUJOCO_GL', 'egl')  # headless rendering unless the user chose otherwise, as sim_env
