"""Export a trained policy for deployment: self-contained model files and policy.json in one folder.

    python export_policy.py --ckpt_dir ckpt/cube --format onnx --out deploy/cube
    python export_policy.py --ckpt_dir ckpt/cube --format onnx --quantize int8 --out deploy/cube_int8 \
        [--calibration 200]
    python export_policy.py --ckpt_dir ckpt/cube --format torchscript --out deploy/cube_ts

The exported graph takes raw inputs and gives raw actions: qpos (B, state_dim) float32 and camera
images (B, cameras, H, W, 3) uint8 at the policy's image size -> actions (B, chunk, action_dim)
float32; the dataset statistics (dataset_stats.pkl) and the image normalisation are inside, and the
batch size is free. ACT and CNNMLP are one graph (policy.onnx). Diffusion is two: its observation
encoder (encoder.onnx: qpos (B, obs_horizon, state_dim), images (B, obs_horizon, cameras, H, W, 3)
-> condition) and its denoising network (denoiser.onnx); the sampling loop runs in the runtime with
the scheduler's constants written to policy.json: DDIM, or DPM-Solver++ for a policy that samples
with --scheduler dpmsolver (given after the flags above, it samples a policy trained with another).
policy.json also names the cameras, image size, sizes, chunk and action horizons, control rate, and
the source checkpoint's SHA-256.
--quantize int8 is static post-training int8 (QDQ, onnxruntime's quantiser): the weights of the
convolutions and matrix products in int8 per channel, their inputs' ranges calibrated on --calibration
observations from the training episodes (config.json's dataset_dir, or --dataset_dir); the export is
refused when its actions on recorded observations differ from the eager policy's by more than
deploy.export.INT8_TOLERANCE in normalised action units (ACT: standard deviations; Diffusion: half
the action's range). --quantize int8-dynamic quantises the weights of the matrix products only,
without calibration (onnxruntime's dynamic quantisation). Run an export with policy_runtime.PolicyRunner
(onnxruntime and numpy, no torch), or evaluate it: imitate_episodes.py --eval --runtime onnxruntime --export_dir DIR.
The settings come from config.json in --ckpt_dir, as the run saved them; a folder without one (the
original's, or LeRobot's) takes imitate_episodes.py's model flags after the ones above, which also
change a saved setting (--scheduler). The export itself is deploy/export.py.
"""
import argparse
import os
import sys

from checkpoints.folder import BEST_CKPT
from common.files import DiskFull
from cli.errors import BAD_INPUT, DEBUG_VAR, message
from cli.run_config import export_settings
from deploy.export import CHECK_BATCHES, RECORDED_CHECKS, export
from deploy.quantize import CALIBRATION_SAMPLES, QUANTIZE_MODES, calibration_of
from deploy.runtime import FILE_TYPES, MANIFEST


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--ckpt_dir', required=True, help='the training folder (config.json, dataset_stats.pkl)')
    parser.add_argument('--ckpt', default=BEST_CKPT, help='checkpoint in --ckpt_dir to export')
    parser.add_argument('--format', choices=tuple(FILE_TYPES), default='onnx',
                        help='onnx: run with onnxruntime, no torch needed; torchscript: run with torch')
    parser.add_argument('--quantize', choices=QUANTIZE_MODES, help='onnx only: int8, static and calibrated (the '
                        'convolutions and matrix products), or int8-dynamic (the matrix products\' weights)')
    parser.add_argument('--calibration', type=int, default=CALIBRATION_SAMPLES, metavar='N',
                        help='--quantize int8: the recorded observations the activation ranges are taken over')
    parser.add_argument('--dataset_dir', help='--quantize int8: the episodes to calibrate on (default: the '
                        'training episodes config.json names)')
    parser.add_argument('--out', required=True, help='folder to write (model files and policy.json)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out folder')
    return parser


def main(argv=None):
    parser = build_parser()
    args, model_flags = parser.parse_known_args(argv)
    try:
        if args.calibration < 1:
            parser.error(f'--calibration must be at least 1, got {args.calibration}')
        settings = export_settings(args.ckpt_dir, args.ckpt, model_flags)
        calibration = calibration_of(settings, args.dataset_dir, args.calibration) if args.quantize == 'int8' else None
        info, difference = export(settings, args.ckpt, args.format, args.out, args.quantize, args.overwrite,
                                  calibration)
    except DiskFull as err:  # nothing written: the partial export was removed
        if os.environ.get(DEBUG_VAR):
            raise
        parser.exit(1, f'{parser.prog}: error: {err.strerror}\n')
    except (*BAD_INPUT, RuntimeError) as err:  # RuntimeError: an export that does not match the eager policy
        if os.environ.get(DEBUG_VAR):
            raise
        parser.exit(2, f'{parser.prog}: error: {message(err)}\n')
    files = ', '.join(entry['name'] for entry in info['files'].values())
    checked = (f"over {len(calibration[:RECORDED_CHECKS])} recorded observations: {difference:.3f} in normalised "
               f"action units" if args.quantize == 'int8' else
               f"over batches {'/'.join(map(str, CHECK_BATCHES))}: {difference:.2e}")
    print(f"Exported {info['policy_class']} ({args.format}{', ' + args.quantize if args.quantize else ''}) to "
          f"{args.out}: {files}, {MANIFEST}; max action difference to the eager policy {checked}")


if __name__ == '__main__':
    main(sys.argv[1:])
