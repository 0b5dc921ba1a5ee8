"""Where a trained SO-101 policy's gripper is when it closes on the cube. Rolls a checkpoint out as
`imitate_episodes.py --eval` does (its poses, its chunks played as --eval plays them) in one
process and, at the step whose gripper command first falls below CLOSING after opening, measures
the cube in the gripper frame ('gripperframe', from the joint positions): its centre's offset from
where the demonstrations have it when they start closing (--approach, so101_sim.scripted.APPROACHES;
mm along the fingers, along the jaws' width and across the jaws), the angle between the jaws and the
cube's faces (degrees, folded to +-45) and how far the cube has been pushed since the start (mm).
Prints JSON: each rollout's figures and highest reward, then the mean magnitudes over the
successful rollouts and over the others.

    python -m bench.so101_alignment --ckpt_dir so101/ckpt --eval_ckpt policy_last.ckpt --num_rollouts 20
    python -m bench.so101_alignment --approach fixed_jaw ...   # a policy trained on fixed_jaw demonstrations

The other flags are imitate_episodes.py --eval's.
"""
import json
import sys

import numpy as np

from bench.common import stdout_to_stderr
from cli.flags import build_parser
from cli.run_config import flags_eval_config, pick_device
from common.seeds import set_seed
from evaluation.rollout import EVAL_SEED, Evaluator, load_policy, load_stats, sample_rollout_poses
from evaluation.settings import EvalSettings
from so101_sim.env import STATE_DIM, cube_yaw
from so101_sim.scripted import APPROACHES, Kinematics

# gripper units: closing, the command falls from 60 (open) to 0; at 50 the moving jaw is short of the cube
CLOSING = 50.0
OFFSET_AXES = ('along_fingers_mm', 'along_jaws_mm', 'across_jaws_mm')


def closing_alignment(kinematics, qpos, cube_pose, start_pose, approach):
    """The cube against the gripper at the joint positions `qpos` (6,) in units -> dict of figures;
    approach: where the demonstrations hold the cube's centre in the gripper frame (3,)."""
    position, rotation = kinematics.site_pose(kinematics.units.to_radians(qpos))
    offset = rotation.T @ (cube_pose[:3] - position) - approach  # (3,) m in the gripper frame
    jaws = rotation[:, 2]  # the direction the jaws open along
    turn = np.degrees(np.arctan2(jaws[1], jaws[0]) - cube_yaw(cube_pose))
    figures = dict(zip(OFFSET_AXES, (1000 * offset).round(1).tolist()))
    figures['jaws_to_faces_deg'] = round(float((turn + 45) % 90 - 45), 1)
    figures['cube_pushed_mm'] = round(float(1000 * np.hypot(*(cube_pose[:2] - start_pose[:2]))), 1)
    return figures


class ClosingWatch:
    """The evaluation's environment, measuring closing_alignment at the first action whose gripper
    command falls below CLOSING after opening (the start pose's gripper is half open)."""

    def __init__(self, env, kinematics, approach):
        self.env, self.kinematics, self.approach = env, kinematics, approach
        self.figures, self.opened, self.start_pose = None, False, None

    def reset(self):
        ts = self.env.reset()
        self.figures, self.opened, self.start_pose = None, False, ts.observation['env_state'].copy()
        return ts

    def step(self, action):
        self.opened = self.opened or action[-1] >= CLOSING
        if self.figures is None and self.opened and action[-1] < CLOSING:
            data = self.env.physics.data  # the state the action was chosen from
            qpos = self.env.task.units.to_units(data.qpos[:STATE_DIM].copy())
            self.figures = closing_alignment(self.kinematics, qpos, data.qpos[STATE_DIM:].copy(), self.start_pose,
                                             self.approach)
        return self.env.step(action)

    def __getattr__(self, name):
        return getattr(self.env, name)


def summary(rollouts, max_reward):
    """Mean magnitude of each figure over the successful rollouts and the others."""
    groups = {'succeeded': [r for r in rollouts if r['highest_reward'] == max_reward],
              'failed': [r for r in rollouts if r['highest_reward'] < max_reward]}
    out = {}
    for name, group in groups.items():
        closed = [r['closing'] for r in group if r['closing'] is not None]
        out[name] = {'rollouts': len(group), 'never_closed': len(group) - len(closed)}
        out[name].update({key: round(float(np.mean([abs(c[key]) for c in closed])), 1) if closed else None
                          for key in (*OFFSET_AXES, 'jaws_to_faces_deg', 'cube_pushed_mm')})
    return out


def main(argv=None):
    parser = build_parser(__doc__)
    parser.add_argument('--approach', choices=list(APPROACHES), default='middle',
                        help="how the policy's demonstrations came down on the cube")
    args = vars(parser.parse_args(['--eval', *(argv or [])]))
    approach_name = args.pop('approach')
    config = flags_eval_config(args, pick_device(args['device']))
    settings = EvalSettings.of(config)
    if settings.task_name != 'sim_so101_pick_place' or settings.runtime != 'torch':
        raise SystemExit(f'this bench rolls out sim_so101_pick_place policies in torch: {settings.ckpt_dir} holds '
                         f'a {settings.task_name} policy, --runtime {settings.runtime}')
    set_seed(EVAL_SEED)
    poses = sample_rollout_poses(settings.task_name, settings.num_rollouts)
    with stdout_to_stderr():  # the policy's construction prints
        evaluator = Evaluator(settings, load_policy(settings, config['eval_ckpt']), load_stats(settings))
    watch = evaluator.env = ClosingWatch(evaluator.env, Kinematics(), APPROACHES[approach_name])
    rollouts = []
    for i, pose in enumerate(poses):
        result = evaluator.rollout(i, pose)
        rollouts.append({'rollout_id': i, 'highest_reward': int(result['highest_reward']), 'closing': watch.figures})
    report = {'ckpt_dir': settings.ckpt_dir, 'eval_ckpt': config['eval_ckpt'], 'approach': approach_name,
              'temporal_agg': settings.temporal_agg, 'summary': summary(rollouts, evaluator.max_reward),
              'rollouts': rollouts}
    print(json.dumps(report, indent=1))
    return report


if __name__ == '__main__':
    main(sys.argv[1:])
