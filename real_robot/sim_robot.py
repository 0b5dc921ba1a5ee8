"""Driver 'sim': the MuJoCo joint-space environment behind the bot and camera interfaces.

Both arms share one SimRig; its clock steps the physics (no sleeping), so motions, resets and
policy rollouts on a real-task config run end to end without hardware, as fast as the CPU allows.
Real camera names map to MuJoCo cameras (settings.SIM_CAMERAS); a frame is rendered only when
it is read, so an evaluation pays only for the cameras its policy looks at.
The gripper joint is mapped to the simulator's normalised gripper through the gripper constants,
so a normalised command or observation passes through unchanged.
"""
import collections.abc

import numpy as np

from constants import (DT, PUPPET_GRIPPER_JOINT_CLOSE, PUPPET_GRIPPER_JOINT_NORMALIZE_FN, PUPPET_GRIPPER_JOINT_OPEN,
                       PUPPET_GRIPPER_POSITION_CLOSE, PUPPET_GRIPPER_POSITION_OPEN,
                       PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN, PUPPET_POS2JOINT)
from real_robot import settings
from real_robot.bots import ARM_JOINTS, Bot, JointState


class SimRig:
    """One simulated scene: the two follower arms, their cameras, and the clock that steps physics."""
    realtime = False
    dt = DT  # seconds of simulated time per tick

    def __init__(self, camera_names, image_size=None, task_name=None):
        from sim_env import make_sim_env
        unknown = [name for name in camera_names if name not in settings.SIM_CAMERAS]
        if unknown:
            raise KeyError(f'--robot_driver sim: no simulated camera for {unknown}; '
                           f'known: {sorted(settings.SIM_CAMERAS)} (settings.SIM_CAMERAS)')
        self.image_size = tuple(image_size or settings.CAMERA_HW)
        self.env = make_sim_env(task_name or settings.SIM_TASK_NAME, camera_names=[])
        self._start(self.env.reset())
        self.bots = (SimBot(self, 0, 'puppet_left'), SimBot(self, 1, 'puppet_right'))
        self.cameras = SimCameraSet(self, camera_names)
        self.ticks = 0  # physics steps so far

    def _start(self, ts):
        self.ts = ts
        self.target = np.array(ts.observation['qpos'], dtype=float)  # the simulator's action layout (ALOHA 2 * 7)
        self._frames = {}

    def tick(self):
        self.ts = self.env.step(self.target.copy())
        self.ticks += 1
        self._frames = {}

    def on_reset(self):
        """A new episode: the simulator samples a new object pose."""
        self._start(self.env.reset())
        self.ticks += 1

    def render(self, sim_camera):
        """(H, W, 3) uint8 frame of the current physics state, rendered once per tick."""
        if sim_camera not in self._frames:
            height, width = self.image_size
            self._frames[sim_camera] = self.env.physics.render(height=height, width=width, camera_id=sim_camera)
        return self._frames[sim_camera]


class SimBot(Bot):
    """One simulated arm; index 0 is the left arm."""

    def __init__(self, rig, side, name):
        super().__init__()
        self.rig, self.side, self.name = rig, side, name
        self.clock = rig
        self._slice = slice(side * (ARM_JOINTS + 1), (side + 1) * (ARM_JOINTS + 1))
        self._torque = True

    def read(self):
        qpos = self.rig.ts.observation['qpos'][self._slice]  # 6 joints + normalised gripper
        qvel = self.rig.ts.observation['qvel'][self._slice]
        finger = PUPPET_GRIPPER_POSITION_UNNORMALIZE_FN(qpos[ARM_JOINTS])
        finger_vel = qvel[ARM_JOINTS] * (PUPPET_GRIPPER_POSITION_OPEN - PUPPET_GRIPPER_POSITION_CLOSE)
        gripper_vel = qvel[ARM_JOINTS] * (PUPPET_GRIPPER_JOINT_OPEN - PUPPET_GRIPPER_JOINT_CLOSE)
        position = np.concatenate([qpos[:ARM_JOINTS], [PUPPET_POS2JOINT(finger), finger, -finger]])
        velocity = np.concatenate([qvel[:ARM_JOINTS], [gripper_vel, finger_vel, -finger_vel]])
        self.last_state = JointState(position, velocity, np.zeros_like(position))  # no motor currents
        return self.last_state

    def command_arm(self, qpos):
        if self._torque:
            self.rig.target[self._slice][:ARM_JOINTS] = qpos

    def command_gripper(self, joint):
        if self._torque:
            self.rig.target[self._slice][ARM_JOINTS] = PUPPET_GRIPPER_JOINT_NORMALIZE_FN(joint)

    def set_operating_mode(self, part, mode):
        """The simulated arm is always position controlled."""

    def set_current_limit(self, part, limit):
        """The simulated gripper has no current limit."""

    def torque(self, enable, part='all'):
        """Without torque a simulated arm keeps its last target (it does not sag)."""
        self._torque = bool(enable)

    def reboot_gripper(self):
        self._torque = True


class SimCameraSet:
    """Simulated cameras with the CameraSet interface."""

    def __init__(self, rig, camera_names, sim_cameras=None):
        """sim_cameras: real camera name -> MuJoCo camera name (default settings.SIM_CAMERAS)."""
        self.rig = rig
        mapping = settings.SIM_CAMERAS if sim_cameras is None else sim_cameras
        self.sim_cameras = {name: mapping[name] for name in camera_names}

    def get_images(self):
        return SimImages(self.rig, self.sim_cameras)

    def close(self):
        """Nothing to release."""


class SimImages(collections.abc.Mapping):
    """The frames of one observation, each rendered when first read (and kept)."""

    def __init__(self, rig, sim_cameras):
        self._rig, self._sim_cameras, self._tick = rig, sim_cameras, rig.ticks
        self._frames = {}

    def __getitem__(self, name):
        if name not in self._frames:
            sim_camera = self._sim_cameras[name]
            if self._rig.ticks != self._tick:
                raise RuntimeError(f"simulated camera '{name}': a frame can be read only before the next step "
                                   '(keep frames with dict(ts.observation["images"]) before stepping)')
            self._frames[name] = self._rig.render(sim_camera)
        return self._frames[name]

    def __iter__(self):
        return iter(self._sim_cameras)

    def __len__(self):
        return len(self._sim_cameras)
