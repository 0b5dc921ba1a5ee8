"""Scripted end-effector demonstrators for the sim tasks (run in ee_sim_env).

At the first step each policy builds per-arm waypoint lists {t, xyz, quat, gripper} from the
initial mocap poses and object poses; later steps interpolate linearly between the waypoints
around the current step (open loop). Optional noise jitters the commanded positions.
"""
import numpy as np

from tasks import TASK_ALIASES, canonical_task_name

### Fixed settings
NOISE_SCALE = 0.01  # +- metres of uniform noise on each commanded xyz with inject_noise
TIME_EPS = 1e-8  # keeps the interpolation fraction finite between waypoints at the same t


def quat_multiply(q1, q2):
    """Hamilton product of quaternions (w, x, y, z)."""
    w1, x1, y1, z1 = q1
    w2, x2, y2, z2 = q2
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                     w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                     w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def axis_angle_quat(axis, degrees):
    """Unit quaternion (w, x, y, z) of a rotation by `degrees` about `axis`."""
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    half = np.deg2rad(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * axis])


def waypoint(t, xyz, quat, gripper):
    return {'t': t, 'xyz': np.asarray(xyz, dtype=np.float64),
            'quat': np.asarray(quat, dtype=np.float64), 'gripper': gripper}


def interpolate(trajectory, t):
    """(xyz, quat, gripper) at step t, linear between the waypoints around t.

    NOTE(faithful): quaternions are interpolated component-wise, not slerped or normalised.
    """
    curr = [w for w in trajectory if w['t'] <= t][-1]
    later = [w for w in trajectory if w['t'] > t]
    nxt = later[0] if later else curr
    frac = (t - curr['t']) / (nxt['t'] - curr['t'] + TIME_EPS)
    return tuple(curr[k] + (nxt[k] - curr[k]) * frac for k in ('xyz', 'quat', 'gripper'))


class BasePolicy:
    """Open-loop waypoint follower; `policy(ts)` returns the (16,) end-effector action."""

    def __init__(self, inject_noise=False, rng=np.random):
        self.inject_noise = inject_noise
        self.rng = rng  # source of the injected noise
        self.step_count = 0
        self.left_trajectory = None
        self.right_trajectory = None

    def reset(self):
        self.step_count = 0

    def generate_trajectory(self, ts_first):
        raise NotImplementedError

    def __call__(self, ts):
        if self.step_count == 0:
            self.generate_trajectory(ts)
        actions = []
        for trajectory in (self.left_trajectory, self.right_trajectory):
            xyz, quat, gripper = interpolate(trajectory, self.step_count)
            if self.inject_noise:
                xyz = xyz + self.rng.uniform(-NOISE_SCALE, NOISE_SCALE, xyz.shape)
            actions.append(np.concatenate([xyz, quat, [gripper]]))
        self.step_count += 1
        return np.concatenate(actions)


class PickAndTransferPolicy(BasePolicy):
    """Right arm picks the cube and meets the left arm mid-air, which takes it over."""

    def generate_trajectory(self, ts_first):
        init_left = ts_first.observation['mocap_pose_left']
        init_right = ts_first.observation['mocap_pose_right']
        box_xyz = np.array(ts_first.observation['env_state'])[:3]

        pick_quat = quat_multiply(init_right[3:], axis_angle_quat([0, 1, 0], -60))
        meet_left_quat = axis_angle_quat([1, 0, 0], 90)
        upright = [1, 0, 0, 0]
        meet_xyz = np.array([0, 0.5, 0.25])

        self.left_trajectory = [
            waypoint(0, init_left[:3], init_left[3:], 0),  # sleep
            waypoint(100, meet_xyz + [-0.1, 0, -0.02], meet_left_quat, 1),  # approach meet position
            waypoint(260, meet_xyz + [0.02, 0, -0.02], meet_left_quat, 1),  # move to meet position
            waypoint(310, meet_xyz + [0.02, 0, -0.02], meet_left_quat, 0),  # close gripper
            waypoint(360, meet_xyz + [-0.1, 0, -0.02], upright, 0),  # move left
            waypoint(400, meet_xyz + [-0.1, 0, -0.02], upright, 0),  # stay
        ]
        self.right_trajectory = [
            waypoint(0, init_right[:3], init_right[3:], 0),  # sleep
            waypoint(90, box_xyz + [0, 0, 0.08], pick_quat, 1),  # approach the cube
            waypoint(130, box_xyz + [0, 0, -0.015], pick_quat, 1),  # go down
            waypoint(170, box_xyz + [0, 0, -0.015], pick_quat, 0),  # close gripper
            waypoint(200, meet_xyz + [0.05, 0, 0], pick_quat, 0),  # approach meet position
            waypoint(220, meet_xyz, pick_quat, 0),  # move to meet position
            waypoint(310, meet_xyz, pick_quat, 1),  # open gripper
            waypoint(360, meet_xyz + [0.1, 0, 0], pick_quat, 1),  # move to right
            waypoint(400, meet_xyz + [0.1, 0, 0], pick_quat, 1),  # stay
        ]


class InsertionPolicy(BasePolicy):
    """Left arm lifts the socket, right arm lifts the peg, and they meet to insert it."""

    def generate_trajectory(self, ts_first):
        init_left = ts_first.observation['mocap_pose_left']
        init_right = ts_first.observation['mocap_pose_right']
        env_state = np.array(ts_first.observation['env_state'])
        peg_xyz, socket_xyz = env_state[:3], env_state[7:10]

        pick_quat_right = quat_multiply(init_right[3:], axis_angle_quat([0, 1, 0], -60))
        # NOTE(faithful): the left grasp orientation is derived from the *right* mocap quaternion
        # (both start upright, so this is harmless).
        pick_quat_left = quat_multiply(init_right[3:], axis_angle_quat([0, 1, 0], 60))
        meet_xyz = np.array([0, 0.5, 0.15])
        lift_right = 0.00715  # right arm meets slightly higher so the peg lines up with the socket

        self.left_trajectory = [
            waypoint(0, init_left[:3], init_left[3:], 0),  # sleep
            waypoint(120, socket_xyz + [0, 0, 0.08], pick_quat_left, 1),  # approach the socket
            waypoint(170, socket_xyz + [0, 0, -0.03], pick_quat_left, 1),  # go down
            waypoint(220, socket_xyz + [0, 0, -0.03], pick_quat_left, 0),  # close gripper
            waypoint(285, meet_xyz + [-0.1, 0, 0], pick_quat_left, 0),  # approach meet position
            waypoint(340, meet_xyz + [-0.05, 0, 0], pick_quat_left, 0),  # insertion
            waypoint(400, meet_xyz + [-0.05, 0, 0], pick_quat_left, 0),  # insertion
        ]
        self.right_trajectory = [
            waypoint(0, init_right[:3], init_right[3:], 0),  # sleep
            waypoint(120, peg_xyz + [0, 0, 0.08], pick_quat_right, 1),  # approach the peg
            waypoint(170, peg_xyz + [0, 0, -0.03], pick_quat_right, 1),  # go down
            waypoint(220, peg_xyz + [0, 0, -0.03], pick_quat_right, 0),  # close gripper
            waypoint(285, meet_xyz + [0.1, 0, lift_right], pick_quat_right, 0),  # approach meet position
            waypoint(340, meet_xyz + [0.05, 0, lift_right], pick_quat_right, 0),  # insertion
            waypoint(400, meet_xyz + [0.05, 0, lift_right], pick_quat_right, 0),  # insertion
        ]


# scripted task name -> demonstrator class
SCRIPTED_POLICIES = {
    'sim_transfer_cube_scripted': PickAndTransferPolicy,
    'sim_insertion_scripted': InsertionPolicy,
}


def get_scripted_policy_class(task_name):
    """Demonstrator class of a scripted task; ValueError listing the scripted tasks."""
    name = canonical_task_name(task_name)
    if name not in SCRIPTED_POLICIES:
        short = [f'{alias} (= {task})' for alias, task in TASK_ALIASES.items() if task in SCRIPTED_POLICIES]
        known = ', '.join(short + sorted(SCRIPTED_POLICIES))
        raise ValueError(f"no scripted demonstrator for task '{task_name}': scripted tasks are {known}")
    return SCRIPTED_POLICIES[name]
