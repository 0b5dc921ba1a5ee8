"""The small interface every arm driver implements, the control clock, and gripper geometry.

A *bot* is one arm (six joints and a gripper) on one driver: Dynamixel SDK, Interbotix/ROS, or
the MuJoCo simulation. Joint states use the Interbotix layout so that code written against
aloha_scripts reads the same indices:
    position / velocity / effort (9,) = [6 arm joints, gripper joint, left finger, right finger]
Arm joints and the gripper joint in rad (rad/s); fingers in metres (m/s), the right finger the
negative of the left; effort is motor current in mA.
"""
import collections
import math
import time

import numpy as np

from constants import DT
from real_robot import settings

JointState = collections.namedtuple('JointState', ['position', 'velocity', 'effort'])
ARM_JOINTS = 6  # joints per arm before the gripper
GRIPPER_INDEX = 6  # gripper joint in a JointState
FINGER_INDEX = 7  # left finger in a JointState


class RobotFault(RuntimeError):
    """A hardware problem that stops the robot (the message says what and where)."""


class TransientFault(RobotFault):
    """A failed read that may succeed when retried (no reply, corrupted reply, stale data)."""


class Clock:
    """Real-time pacing: tick() returns at fixed DT intervals (a deadline schedule, so the time
    spent between ticks is not added to the period). A tick more than one period late restarts
    the schedule instead of bursting to catch up. `missed` counts the ticks that came after their
    deadline (the deadline misses of the control loop)."""
    realtime = True

    def __init__(self, dt=None):
        self.dt = DT if dt is None else dt
        self._deadline = None
        self.missed = 0

    def tick(self):
        now = time.monotonic()
        if self._deadline is not None and now > self._deadline:
            self.missed += 1
        if self._deadline is None or now > self._deadline + self.dt:
            self._deadline = now + self.dt
        time.sleep(max(0.0, self._deadline - now))
        self._deadline += self.dt

    def on_reset(self):
        """Called by env.reset(fake=False); real hardware has nothing to reset."""


REAL_TIME = Clock()  # shared by all real bots so that moving four arms together ticks once


class Bot:
    """One arm. Drivers implement the methods below; `clock` paces motions of this arm."""
    name = 'bot'
    model = settings.PUPPET_MODEL
    clock = REAL_TIME

    def __init__(self):
        self.last_state = None  # JointState of the last successful read()

    def read(self):
        """JointState (9,) in the Interbotix layout (see module docstring)."""
        raise NotImplementedError

    def command_arm(self, qpos):
        """Send goal positions (6,) rad to the arm joints; returns at once."""
        raise NotImplementedError

    def command_gripper(self, joint):
        """Send a goal position (rad) to the gripper joint; returns at once."""
        raise NotImplementedError

    def set_operating_mode(self, part, mode):
        """part: 'arm' | 'gripper'; mode: a key of protocol.OPERATING_MODES."""
        raise NotImplementedError

    def torque(self, enable, part='all'):
        """Switch motor torque of 'arm', 'gripper' or 'all'."""
        raise NotImplementedError

    def reboot_gripper(self):
        """Reboot the gripper servo (clears an overload) and switch its torque back on."""
        raise NotImplementedError

    def set_current_limit(self, part, limit):
        """Write the Current Limit register (raw units of 2.69 mA) of 'arm' or 'gripper'."""
        raise NotImplementedError

    def close(self):
        """Release the driver's resources (ports, nodes)."""


def finger_position(gripper_joint, model):
    """Left finger position (m) of a gripper joint angle (rad), through the horn-and-arm linkage."""
    horn, arm = settings.GRIPPER_LINKAGE[model]
    angle = math.pi / 2 - np.asarray(gripper_joint, dtype=float)
    return horn * np.cos(angle) + np.sqrt(arm ** 2 - (horn * np.sin(angle)) ** 2)


def finger_velocity(gripper_joint, gripper_velocity, model):
    """Left finger velocity (m/s): d finger_position / d joint times the joint velocity."""
    horn, arm = settings.GRIPPER_LINKAGE[model]
    angle = math.pi / 2 - np.asarray(gripper_joint, dtype=float)
    root = np.sqrt(arm ** 2 - (horn * np.sin(angle)) ** 2)
    d_pos_d_angle = -horn * np.sin(angle) - horn ** 2 * np.sin(angle) * np.cos(angle) / root
    return -d_pos_d_angle * gripper_velocity  # d angle / d joint = -1


def joint_state(arm_and_gripper_pos, arm_and_gripper_vel, arm_and_gripper_effort, model):
    """JointState (9,) from the 7 motor readings (6 arm joints + gripper), fingers added."""
    pos = np.asarray(arm_and_gripper_pos, dtype=float)
    vel = np.asarray(arm_and_gripper_vel, dtype=float)
    eff = np.asarray(arm_and_gripper_effort, dtype=float)
    finger = finger_position(pos[GRIPPER_INDEX], model)
    finger_vel = finger_velocity(pos[GRIPPER_INDEX], vel[GRIPPER_INDEX], model)
    return JointState(np.concatenate([pos, [finger, -finger]]),
                      np.concatenate([vel, [finger_vel, -finger_vel]]),
                      np.concatenate([eff, [eff[GRIPPER_INDEX], eff[GRIPPER_INDEX]]]))
