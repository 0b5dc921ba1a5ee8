"""Run an exported policy (export_policy.py) on a robot's computer: onnxruntime and numpy, no torch.

    from policy_runtime import PolicyRunner
    runner = PolicyRunner('deploy/cube')            # the folder export_policy.py wrote
    runner.reset()                                  # at the start of every episode
    action = runner.act(qpos, images)               # qpos (state_dim,) float, images (cams, H, W, 3) uint8
    chunk = runner.query(qpos_batch, image_batch)   # (B, state_dim), (B, cams, H, W, 3) -> (B, chunk, action_dim)

The runtime lives in deploy/runtime.py.
"""
from deploy.runtime import ExportError, PolicyRunner

__all__ = ['PolicyRunner', 'ExportError']
