"""Driver 'interbotix': arms through the official ROS 1 Interbotix stack (xs_sdk nodes running).

Used when `interbotix_xs_modules` imports. Joint states come from the arm's joint_states topic,
which already has the Interbotix layout [6 joints, gripper, left finger, right finger].
"""
import numpy as np

from real_robot import settings
from real_robot.bots import Bot, JointState, TransientFault

_PART = {'arm': ('group', 'arm'), 'gripper': ('single', 'gripper')}  # Interbotix cmd_type and name


class InterbotixBot(Bot):
    """One arm driven by an InterbotixManipulatorXS (ROS node `robot_name` must be running)."""

    def __init__(self, name, model, init_node=False):
        super().__init__()
        from interbotix_xs_modules.arm import InterbotixManipulatorXS
        from interbotix_xs_msgs.msg import JointSingleCommand
        self.name, self.model = name, model
        self.bot = InterbotixManipulatorXS(robot_model=model, group_name='arm', gripper_name='gripper',
                                           robot_name=name, init_node=init_node)
        self._gripper_command = JointSingleCommand(name='gripper')

    def read(self):
        import rospy
        msg = self.bot.dxl.joint_states
        if msg is None:
            raise TransientFault(f"arm '{self.name}': no joint_states message yet (is its xs_sdk node running?)")
        age = (rospy.Time.now() - msg.header.stamp).to_sec()
        if age > settings.SERVO_TIMEOUT_S:
            raise TransientFault(f"arm '{self.name}': joint_states is {age:.2f} s old")
        self.last_state = JointState(np.array(msg.position), np.array(msg.velocity), np.array(msg.effort))
        return self.last_state

    def command_arm(self, qpos):
        self.bot.arm.set_joint_positions(list(qpos), blocking=False)

    def command_gripper(self, joint):
        self._gripper_command.cmd = float(joint)
        self.bot.gripper.core.pub_single.publish(self._gripper_command)

    def _parts(self, part):
        return [_PART[p] for p in (('arm', 'gripper') if part == 'all' else (part,))]

    def set_operating_mode(self, part, mode):
        for cmd_type, group in self._parts(part):
            self.bot.dxl.robot_set_operating_modes(cmd_type, group, mode)

    def set_current_limit(self, part, limit):
        for cmd_type, group in self._parts(part):
            self.bot.dxl.robot_set_motor_registers(cmd_type, group, 'Current_Limit', limit)

    def torque(self, enable, part='all'):
        for cmd_type, group in self._parts(part):
            self.bot.dxl.robot_torque_enable(cmd_type, group, bool(enable))

    def reboot_gripper(self):
        self.bot.dxl.robot_reboot_motors('single', 'gripper', True)
