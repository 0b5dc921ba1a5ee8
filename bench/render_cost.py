"""Cost and pixel effect of the shadow map size, or of no shadows; prints one JSON object.

Renders the 'top' camera of sim_transfer_cube_scripted (480x640 unless --image_size) for a few states of a scripted
episode (arms reaching, lifting, handing over), once per shadow map size, and reports the CPU and
wall milliseconds per frame (rasteriser threads included) and how the frames differ from those at
the first size given; size 0 means no light casts a shadow (record_sim_episodes.py --no_shadows).
Only `mujoco` and numpy are needed to render, so frames saved with
`--save` in this project's environment can be compared with another MuJoCo release:

    python -m bench.render_cost [--shadow_sizes 4096 2048 1024 0] [--image_size 120 160] [--save frames.npz]
    other-env/bin/python -m bench.render_cost --compare frames.npz --shadow_sizes 4096
"""
import argparse
import os
import time

os.environ.setdefault('MUJOCO_GL', 'egl')

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine_report, print_report  # noqa: E402

TASK = 'sim_transfer_cube_scripted'
STATE_STEPS = (90, 150, 250, 330)  # EE rollout steps whose full qpos is rendered
CAMERA = 'top'


def scripted_states(seed):
    """(xml path, (len(STATE_STEPS), nq) full qpos) of a scripted transfer-cube rollout."""
    import ee_sim_env
    import sim_env
    from scripted_policy import PickAndTransferPolicy
    env = ee_sim_env.make_ee_sim_env(TASK, camera_names=[], seed=seed)
    ts = env.reset()
    policy = PickAndTransferPolicy()
    states = []
    for t in range(max(STATE_STEPS) + 1):
        ts = env.step(policy(ts))
        if t in STATE_STEPS:
            states.append(env.physics.data.qpos.copy())
    xml = sim_env.asset_path(sim_env.task_family(TASK)[0])  # the joint-space model that is recorded
    return xml, np.stack(states)


def render_frames(xml, states, shadow_size, timed_frames, image_size):
    """(frames (S, H, W, 3) uint8, CPU ms per frame, wall ms per frame) at one shadow map size
    (0: no shadows)."""
    model = mujoco.MjModel.from_xml_path(xml)
    if shadow_size:
        model.vis.quality.shadowsize = shadow_size
    else:
        model.light_castshadow[:] = 0
    frames, cpu_ms, wall_ms = timed_render(model, states, [CAMERA], timed_frames, image_size)
    return frames[:, 0], cpu_ms, wall_ms


def timed_render(model, states, cameras, timed_frames, image_size):
    """Each camera's frame of each full qpos in `states` -> (frames (S, len(cameras), H, W, 3) uint8, CPU ms
    per frame, wall ms per frame over `timed_frames` more frames of the last state, the cameras in turn)."""
    data = mujoco.MjData(model)
    renderer = mujoco.Renderer(model, *image_size)
    frames = []
    for qpos in states:
        data.qpos[:] = qpos
        mujoco.mj_forward(model, data)
        views = []
        for camera in cameras:
            renderer.update_scene(data, camera=camera)
            views.append(renderer.render().copy())
        frames.append(views)
    start, start_cpu = time.perf_counter(), time.process_time()
    for i in range(timed_frames):
        renderer.update_scene(data, camera=cameras[i % len(cameras)])
        renderer.render()
    cpu_ms = (time.process_time() - start_cpu) / timed_frames * 1e3
    wall_ms = (time.perf_counter() - start) / timed_frames * 1e3
    if hasattr(renderer, 'close'):  # renderers of MuJoCo 2.3 have none
        renderer.close()
    return np.array(frames), cpu_ms, wall_ms


def difference(frames, reference):
    """Share of pixels that changed, and the mean / max absolute difference in grey levels."""
    delta = np.abs(frames.astype(np.int16) - reference.astype(np.int16))
    return {'pixels_changed': float((delta.max(-1) > 0).mean()),
            'mean_abs_levels': float(delta.mean()), 'max_abs_levels': int(delta.max())}


def main(args):
    if args.compare:
        saved = np.load(args.compare)
        xml, states, reference = args.xml or str(saved['xml']), saved['states'], saved['frames']
        reference_name = f"{args.compare} (mujoco {saved['mujoco']}, shadow {int(saved['shadow_size'])})"
    else:
        xml, states = scripted_states(args.seed)
        reference = reference_name = None
    results = {'mujoco': mujoco.__version__, 'image_size': args.image_size, 'states': len(states), **machine_report(),
               'shadow_sizes': {}}
    for shadow_size in args.shadow_sizes:
        frames, cpu_ms, wall_ms = render_frames(xml, states, shadow_size, args.timed_frames, args.image_size)
        entry = {'cpu_ms_per_frame': round(cpu_ms, 1), 'wall_ms_per_frame': round(wall_ms, 1)}
        if reference is None:
            reference, reference_name = frames, f'shadow {shadow_size}'
            if args.save:
                np.savez_compressed(args.save, frames=frames, states=states, xml=xml,
                                    mujoco=mujoco.__version__, shadow_size=shadow_size)
        else:
            entry['vs_reference'] = difference(frames, reference)
        results['shadow_sizes'][shadow_size] = entry
    results['reference'] = reference_name
    print_report(results)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--shadow_sizes', type=int, nargs='+', default=[4096, 2048, 1024, 0],
                        help='the first is the reference unless --compare is given; 0: no shadows')
    parser.add_argument('--image_size', type=int, nargs=2, default=[480, 640], metavar=('H', 'W'))
    parser.add_argument('--timed_frames', type=int, default=30)
    parser.add_argument('--seed', type=int, default=3, help="the scripted episode's object pose seed")
    parser.add_argument('--save', help='write the reference frames and states to this .npz')
    parser.add_argument('--compare', help='a --save file: compare against its frames, rendering its states')
    parser.add_argument('--xml', help='with --compare: the model file, when not at the saved path')
    main(parser.parse_args())
