"""Cameras of a dm_control simulation, shared by the ALOHA (sim_env.py) and SO-101 (so101_sim/) tasks."""
import numpy as np
from dm_control import mujoco


def resolve_cameras(physics, camera_names, aliases=None):
    """{observation name: MuJoCo camera name} of `camera_names` (aliases: observation name -> MuJoCo
    name where they differ); ValueError naming the model's cameras on an unknown one."""
    aliases = aliases or {}
    model = physics.model
    known = [model.id2name(i, 'camera') for i in range(model.ncam)]
    resolved = {}
    for name in camera_names:
        mj_name = aliases.get(name, name)
        if mj_name not in known:
            options = ', '.join(sorted(set(known) | set(aliases)))
            raise ValueError(f"unknown camera '{name}': the sim model has {options}")
        resolved[name] = mj_name
    return resolved


class CameraSet:
    """dm_control cameras reused from frame to frame: {name: MuJoCo camera} at one (H, W)."""

    def __init__(self, physics, cameras, image_size):
        height, width = image_size
        self.cameras = {name: mujoco.Camera(physics, height=height, width=width, camera_id=mj_name)
                        for name, mj_name in cameras.items()}

    def render_views(self):
        """{name: (H, W, 3) uint8 view of the camera's buffer}, valid until the next render."""
        return {name: camera.render() for name, camera in self.cameras.items()}

    def render(self):
        """{name: (H, W, 3) uint8 frame} that the caller owns."""
        return {name: np.ascontiguousarray(view) for name, view in self.render_views().items()}
