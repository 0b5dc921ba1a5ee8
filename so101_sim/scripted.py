"""Scripted pick-and-place demonstrations for the simulated SO-101: waypoints of the gripper in the
world, inverse kinematics for each control step, joint targets in LeRobot's units.

The gripper points straight down through the whole motion, its jaws opening across two faces of
the cube. Inverse kinematics is damped least squares on the 'gripperframe' site's position and
orientation over the five arm joints, started from the previous step's solution.
"""
import itertools

import numpy as np
from dm_control.mujoco import wrapper  # noqa: F401  (the GL backend is chosen before mujoco loads)
import mujoco

from so101_sim import scene
from so101_sim.env import STATE_DIM, START_POSE, Units, cube_yaw

SITE = 'gripperframe'  # at the fixed jaw's tip; its x axis points along the fingers, its z axis across the jaws
FIXED_PAD_FACE = 0.0065  # m across the jaws from the site: the fixed pad's inner face
MOVING_PAD_FACE = 0.079  # m across the jaws from the site: the moving pad's inner face at GRIPPER_OPEN
# The cube's centre in the site's frame when the jaws hold it: just inside the fingertip, against the
# fixed pad (GRASP_OFFSET), where the grasp ends. The demonstrations come down with the cube in the
# middle of the open jaws instead (MIDDLE_OFFSET) and the closing jaw slides it over: that forgives a
# gripper 2 cm off one way and 1.5 cm the other, where coming down against the fixed pad fails 5 mm
# off towards it (bench.so101_grasp); over the same cube positions a policy trained on them succeeded
# in 74% of rollouts against 58% (docs/results.md).
GRASP_OFFSET = np.array([-0.001, 0.0, FIXED_PAD_FACE + scene.CUBE_HALF])
MIDDLE_OFFSET = np.array([-0.001, 0.0, (FIXED_PAD_FACE + MOVING_PAD_FACE) / 2])
APPROACHES = {'fixed_jaw': GRASP_OFFSET, 'middle': MIDDLE_OFFSET}  # the cube's centre while coming down
GRIPPER_OPEN = 60.0  # units: the pads 7 cm apart
GRIPPER_CLOSED = 0.0  # a target past the cube's width, so the jaws squeeze it
# Pointing straight down, the gripper reaches at most about 9 cm above the table (wrist_flex's range)
HOVER = 0.06  # m above the cube's centre before going down
CARRY = 0.08  # m: the cube's height while carried
PLACE = scene.CUBE_HALF + 0.004  # m: the cube's centre when let go
# (step, what happens) of a 300-step episode at 30 Hz: each phase ends at its step
PHASES = (
    (45, 'hover'),       # over the cube, open
    (75, 'descend'),     # jaws around the cube
    (95, 'close'),
    (125, 'lift'),
    (185, 'carry'),      # over the target
    (215, 'lower'),
    (230, 'release'),
    (260, 'retreat'),    # up again, open
)
IK_ITERATIONS = 60
IK_DAMPING = 1e-3
IK_TOLERANCE = 1e-5


def down_rotation(yaw):
    """The site's orientation (3, 3), columns its axes in the world: along the fingers straight down, the
    jaws opening along the horizontal direction `yaw`."""
    across = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return np.stack([down, np.cross(across, down), across], axis=1)


def grasp_yaw(cube_pose):
    """The jaws' opening direction: along the cube's own x axis. Choosing instead the face nearest the
    arm's direction makes the grasp jump by 90 degrees between two cubes a degree apart, and a policy
    learning from such demonstrations averages the two."""
    return cube_yaw(cube_pose)


class Kinematics:
    """Forward and inverse kinematics of the arm on a copy of the scene's model."""

    def __init__(self):
        self.model = scene.build_model()
        self.data = mujoco.MjData(self.model)
        self.site = self.model.site(SITE).id
        self.units = Units(self.model)
        self.dofs = np.arange(scene.ARM_DOF)  # the five arm joints lead qpos and qvel

    def site_pose(self, radians):
        self.data.qpos[:STATE_DIM] = radians
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # the Jacobian reads the joint axes it computes
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(self, position, rotation, start):
        """Joint radians (6,) putting the site at `position` with `rotation`, from `start` (6,); the
        gripper joint is kept."""
        q = np.array(start, dtype=float)
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        low, high = self.units.low[:scene.ARM_DOF], self.units.high[:scene.ARM_DOF]
        for _ in range(IK_ITERATIONS):
            now, turn = self.site_pose(q)
            error = np.concatenate([position - now,
                                    0.5 * sum(np.cross(turn[:, i], rotation[:, i]) for i in range(3))])  # (6,)
            if error @ error < IK_TOLERANCE ** 2:
                break
            mujoco.mj_jacSite(self.model, self.data, jacp, jacr, self.site)
            jac = np.concatenate([jacp, jacr])[:, self.dofs]  # (6, 5)
            step = jac.T @ np.linalg.solve(jac @ jac.T + IK_DAMPING * np.eye(6), error)
            q[:scene.ARM_DOF] = np.clip(q[:scene.ARM_DOF] + step, low, high)
        return q


class ScriptedPickPlace:
    """The scripted policy: called with each time step, it returns the next action (6,) in units."""

    def __init__(self, kinematics, cube_pose, inject_noise=False, rng=None, approach=MIDDLE_OFFSET):
        """approach: the cube's centre in the site's frame while the gripper comes down and closes (3,)."""
        self.kin = kinematics
        self.approach = approach
        self.rng = rng if rng is not None else np.random.default_rng()
        self.noise = 0.004 if inject_noise else 0.0  # m of uniform noise on each waypoint
        self.q = kinematics.units.to_radians(np.asarray(START_POSE, dtype=float))
        start, _ = kinematics.site_pose(self.q)
        self.waypoints = self._waypoints(start, np.asarray(cube_pose, dtype=float))
        self.t = 0

    @staticmethod
    def _grip_site(centre, rotation, offset=GRASP_OFFSET):
        """Where the site goes for the cube's centre to sit at `offset` in the site's frame."""
        return centre - rotation @ offset

    def _waypoints(self, start, cube):
        """[(step, site position, yaw, gripper units)], the episode's keyframes."""
        yaw = grasp_yaw(cube)
        rotation = down_rotation(yaw)
        target = np.array([*scene.TARGET_CENTRE, 0.0])
        target_yaw = yaw + np.arctan2(target[1], target[0]) - np.arctan2(cube[1], cube[0])
        place_rotation = down_rotation(target_yaw)
        at = {
            'hover': (self._grip_site(cube[:3] + [0, 0, HOVER], rotation, self.approach), yaw, GRIPPER_OPEN),
            'descend': (self._grip_site(cube[:3], rotation, self.approach), yaw, GRIPPER_OPEN),
            'close': (self._grip_site(cube[:3], rotation, self.approach), yaw, GRIPPER_CLOSED),
            'lift': (self._grip_site(np.array([*cube[:2], CARRY]), rotation, self.approach), yaw, GRIPPER_CLOSED),
            'carry': (self._grip_site(target + [0, 0, CARRY], place_rotation), target_yaw, GRIPPER_CLOSED),
            'lower': (self._grip_site(target + [0, 0, PLACE], place_rotation), target_yaw, GRIPPER_CLOSED),
            'release': (self._grip_site(target + [0, 0, PLACE], place_rotation), target_yaw, GRIPPER_OPEN),
            'retreat': (self._grip_site(target + [0, 0, CARRY], place_rotation), target_yaw, GRIPPER_OPEN),
        }
        first_yaw = np.arctan2(start[1], start[0])
        keys = [(0, start, first_yaw, START_POSE[-1])]
        for step, name in PHASES:
            position, phase_yaw, grip = at[name]
            noise = self.rng.uniform(-self.noise, self.noise, 3) if self.noise else 0.0
            keys.append((step, position + noise, phase_yaw, grip))
        return keys

    def _interpolated(self, t):
        """(site position, yaw, gripper units) at step t, linear between keyframes, held after the last."""
        for (t0, p0, y0, g0), (t1, p1, y1, g1) in zip(self.waypoints, self.waypoints[1:]):
            if t <= t1:
                f = (t - t0) / (t1 - t0)
                return p0 + f * (p1 - p0), y0 + f * (y1 - y0), g0 + f * (g1 - g0)
        _, p, y, g = self.waypoints[-1]
        return p, y, g

    def __call__(self, ts=None):
        position, yaw, grip = self._interpolated(self.t)
        self.t += 1
        self.q = self.kin.solve(position, down_rotation(yaw), self.q)
        action = self.kin.units.to_units(self.q)
        action[-1] = grip
        return action


def aimed_off(cube_pose, miss):
    """The cube pose (7,) moved `miss` m across the jaws (along the cube's own x axis, grasp_yaw)."""
    yaw = grasp_yaw(cube_pose)
    aimed = np.array(cube_pose, dtype=float)
    aimed[:2] += miss * np.array([np.cos(yaw), np.sin(yaw)])
    return aimed


def scripted_steps(env, kinematics, cube_pose, inject_noise=False, rng=None, miss=0.0, approach=MIDDLE_OFFSET):
    """The scripted policy in `env` (so101_sim.env) from `cube_pose`, step by step: yields (action (6,)
    in units, the time step it led to) until the caller stops. miss: m the script aims off the cube
    across the jaws (the scene keeps the true pose), as a policy might; approach: ScriptedPickPlace's."""
    env.task.set_object_pose(cube_pose)
    ts = env.reset()
    policy = ScriptedPickPlace(kinematics, aimed_off(cube_pose, miss), inject_noise, rng, approach)
    while True:
        action = policy(ts)
        ts = env.step(action)
        yield action, ts


def scripted_episode(env, kinematics, cube_pose, steps, **script):
    """scripted_steps run for `steps` steps -> (actions (steps, 6) in units, rewards (steps,));
    script: scripted_steps' keywords (inject_noise, rng, miss, approach)."""
    actions, rewards = [], []
    for action, ts in itertools.islice(scripted_steps(env, kinematics, cube_pose, **script), steps):
        actions.append(action)
        rewards.append(ts.reward)
    return np.array(actions), np.array(rewards)
