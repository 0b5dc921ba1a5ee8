"""The original's policy names, for scripts written against the original code: ACTPolicy, CNNMLPPolicy
and make_policy. The policies live in policies/ (base.py, act.py, diffusion.py, registry.py)."""
from policies.act import ACTPolicy, CNNMLPPolicy
from policies.registry import make_policy

__all__ = ['ACTPolicy', 'CNNMLPPolicy', 'make_policy']
