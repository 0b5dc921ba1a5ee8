"""The policies by name: 'ACT', 'CNNMLP', 'Diffusion' -> class, config and instance.

The Diffusion policy (policies/diffusion.py) is imported only when it is asked for: it needs diffusers.
"""
from policies.act import ACTPolicy, CNNMLPPolicy

POLICY_CLASSES = ('ACT', 'CNNMLP', 'Diffusion')


def policy_type(policy_class):
    """The class of 'ACT', 'CNNMLP' or 'Diffusion' (Diffusion imported on demand)."""
    if policy_class not in POLICY_CLASSES:
        raise ValueError(f"unknown policy_class '{policy_class}': expected one of {', '.join(POLICY_CLASSES)}")
    if policy_class == 'Diffusion':
        from policies.diffusion import DiffusionPolicy
        return DiffusionPolicy
    return {'ACT': ACTPolicy, 'CNNMLP': CNNMLPPolicy}[policy_class]


def resolve_policy_config(policy_class, policy_config):
    """The complete config `make_policy` would build `policy_class` from."""
    return policy_type(policy_class).resolve_config(policy_config)


def checkpoint_policy_class(obj):
    """The policy class a loaded checkpoint object was written by, read from its keys; None if unknown."""
    if not isinstance(obj, dict):
        return None
    if 'nets' in obj:
        return 'Diffusion'
    if 'model.mlp.0.weight' in obj:
        return 'CNNMLP'
    if 'model.query_embed.weight' in obj:
        return 'ACT'
    return None


def make_policy(policy_class, policy_config, load_pretrained=True):
    """Build 'ACT', 'CNNMLP' or 'Diffusion' from its config dict. load_pretrained False leaves the
    image trunks without their ImageNet weights, for a checkpoint that replaces them."""
    return policy_type(policy_class)(policy_config, load_pretrained=load_pretrained)

