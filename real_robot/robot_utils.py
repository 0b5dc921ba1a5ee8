"""aloha_scripts' robot_utils for our bots: motions by linear interpolation and set-up helpers."""
import numpy as np

from real_robot import settings
from real_robot.bots import ARM_JOINTS, GRIPPER_INDEX


def get_arm_joint_positions(bot):
    return bot.read().position[:ARM_JOINTS]


def get_arm_gripper_positions(bot):
    return bot.read().position[GRIPPER_INDEX]


def _tick(bot_list):
    """Advance time by one control step once per distinct clock (real time or simulation)."""
    for clock in {id(bot.clock): bot.clock for bot in bot_list}.values():
        clock.tick()


def _interpolate(bot_list, command, start_pose_list, target_pose_list, move_time):
    """Send `command(bot, pose)` along straight lines from start to target poses in
    int(move_time / dt) steps, one control period dt of the arms' clock apart."""
    num_steps = int(move_time / bot_list[0].clock.dt) if bot_list else 0
    trajectories = [np.linspace(start, target, num_steps) for start, target in zip(start_pose_list, target_pose_list)]
    for t in range(num_steps):
        for bot, trajectory in zip(bot_list, trajectories):
            command(bot, trajectory[t])
        _tick(bot_list)


def move_arms(bot_list, target_pose_list, move_time=1, start_pose_list=None):
    """Move arms to target joint poses (6,) in int(move_time / dt) interpolated steps.
    start_pose_list defaults to the arms' present poses."""
    if start_pose_list is None:
        start_pose_list = [get_arm_joint_positions(bot) for bot in bot_list]
    _interpolate(bot_list, lambda bot, pose: bot.command_arm(pose), start_pose_list, target_pose_list, move_time)


def move_grippers(bot_list, target_pose_list, move_time):
    """Move gripper joints to targets (rad) in int(move_time / dt) interpolated steps."""
    starts = [get_arm_gripper_positions(bot) for bot in bot_list]
    _interpolate(bot_list, lambda bot, pose: bot.command_gripper(pose), starts, target_pose_list, move_time)


def torque_on(bot):
    bot.torque(True, 'arm')
    bot.torque(True, 'gripper')


def torque_off(bot):
    bot.torque(False, 'arm')
    bot.torque(False, 'gripper')


def setup_puppet_bot(bot):
    """Follower arm: gripper rebooted, arm in position mode, gripper in current-based position."""
    bot.reboot_gripper()
    bot.set_operating_mode('arm', settings.PUPPET_ARM_MODE)
    bot.set_operating_mode('gripper', settings.PUPPET_GRIPPER_MODE)
    if settings.PUPPET_GRIPPER_CURRENT_LIMIT is not None:
        bot.set_current_limit('gripper', settings.PUPPET_GRIPPER_CURRENT_LIMIT)
    torque_on(bot)


def setup_master_bot(bot):
    """Leader arm: arm in PWM mode, gripper in current-based position, torque off (moved by hand)."""
    bot.set_operating_mode('arm', 'pwm')
    bot.set_operating_mode('gripper', 'current_based_position')
    torque_off(bot)
