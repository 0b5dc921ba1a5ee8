"""Cost and pixel effect of multisample anti-aliasing on the simulated SO-101's offscreen frames;
prints one JSON object.

Renders the scene's cameras (`front`, `wrist`) at --image_size for a few states of a scripted episode
(over the cube, closing, carrying, releasing), once per multisample count (MuJoCo's
`visual.quality.offsamples`; so101_sim/scene.py's OFFSCREEN_SAMPLES is what recordings and
evaluations use), and reports the CPU and wall milliseconds per frame (rasteriser threads
included) and how the frames differ from those at the first count given.

    python -m bench.so101_render                                 # 96x128, 4 against 0 samples
    python -m bench.so101_render --image_size 480 640 --samples 4 0
"""
import argparse
import itertools
import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import numpy as np  # noqa: E402

from bench.common import machine_report, print_report  # noqa: E402
from bench.render_cost import difference, timed_render  # noqa: E402

STATE_STEPS = (45, 90, 150, 225)  # steps of the scripted episode (so101_sim.scripted.PHASES) whose qpos is drawn


def scripted_states(seed):
    """(len(STATE_STEPS), nq) full qpos of a scripted pick and place."""
    from so101_sim.env import make_so101_env, sample_cube_pose
    from so101_sim.scripted import Kinematics, scripted_steps
    env = make_so101_env(camera_names=[], shadows=False)
    steps = scripted_steps(env, Kinematics(), sample_cube_pose(np.random.default_rng(seed)))
    states = []
    for step, _ in enumerate(itertools.islice(steps, STATE_STEPS[-1]), start=1):
        if step in STATE_STEPS:
            states.append(env.physics.data.qpos.copy())
    return np.stack(states)


def render_frames(states, samples, timed_frames, image_size):
    """(frames (S, cameras, H, W, 3) uint8, CPU ms per frame, wall ms per frame) at one multisample count."""
    from so101_sim import scene
    model = scene.build_model(shadows=False)
    model.vis.quality.offsamples = samples
    return timed_render(model, states, list(scene.CAMERAS), timed_frames, image_size)


def main(args):
    states = scripted_states(args.seed)
    results = {'image_size': args.image_size, 'states': len(states), **machine_report(), 'samples': {}}
    reference = None
    for samples in args.samples:
        frames, cpu_ms, wall_ms = render_frames(states, samples, args.timed_frames, args.image_size)
        entry = {'cpu_ms_per_frame': round(cpu_ms, 1), 'wall_ms_per_frame': round(wall_ms, 1)}
        if reference is None:
            reference, results['reference'] = frames, f'{samples} samples'
        else:
            entry['vs_reference'] = difference(frames, reference)
        results['samples'][samples] = entry
    print_report(results)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--samples', type=int, nargs='+', default=[4, 0],
                        help='multisample counts; the first is the reference')
    parser.add_argument('--image_size', type=int, nargs=2, default=[96, 128], metavar=('H', 'W'))
    parser.add_argument('--timed_frames', type=int, default=60)
    parser.add_argument('--seed', type=int, default=3, help="the scripted episode's cube pose seed")
    main(parser.parse_args())
