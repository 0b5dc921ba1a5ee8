"""Why an ACT/CNNMLP checkpoint does not fit a model: the config values that most probably differ,
read back from the keys and shapes of both state dicts (policy.mismatch_report lists the keys)."""
import re

### What each shape-derived value is called in the policy config / on the command line
CONFIG_HINTS = {
    'num_queries': "num_queries (--chunk_size)",
    'hidden_dim': 'hidden_dim (--hidden_dim)',
    'dim_feedforward': 'dim_feedforward (--dim_feedforward)',
    'state_dim': 'state_dim (the robot state size of the data)',
    'action_dim': 'action_dim (the action size of the data)',
    'latent_dim': 'latent_dim',
    'enc_layers': 'enc_layers',
    'dec_layers': 'dec_layers',
    'backbone': 'backbone (--backbone)',
    'num_backbones': 'camera_names / per_camera_backbone (number of image trunks)',
    'pre_norm': 'pre_norm',
    'position_embedding': 'position_embedding',
    'mlp_input': 'camera_names, image_size or state_dim (CNNMLP head input size)',
}


def _shape(sd, key, dim):
    value = sd.get(key)
    return None if value is None or value.dim() <= dim else int(value.shape[dim])


def _count_indices(sd, prefix):
    pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
    found = {int(m.group(1)) for k in sd for m in [pattern.match(k)] if m}
    return len(found) or None


def _backbone_name(sd):
    keys = set(sd)
    if any(k.endswith('body.layer1.0.conv3.weight') for k in keys):
        return 'resnet50'
    if any(k.endswith('body.layer1.2.conv1.weight') for k in keys):
        return 'resnet34'
    return 'resnet18' if any('.body.' in k for k in keys) else None


def infer_config(sd):
    """Config values readable from an ACT/CNNMLP state dict's keys and shapes (None when absent)."""
    return {
        'num_queries': _shape(sd, 'model.query_embed.weight', 0),
        'hidden_dim': _shape(sd, 'model.query_embed.weight', 1),
        'dim_feedforward': _shape(sd, 'model.transformer.encoder.layers.0.linear1.weight', 0),
        'state_dim': _shape(sd, 'model.input_proj_robot_state.weight', 1),
        'action_dim': _shape(sd, 'model.action_head.weight', 0),
        'latent_dim': _shape(sd, 'model.latent_out_proj.weight', 1),
        'enc_layers': _count_indices(sd, 'model.transformer.encoder.layers.'),
        'dec_layers': _count_indices(sd, 'model.transformer.decoder.layers.'),
        'backbone': _backbone_name(sd),
        'num_backbones': _count_indices(sd, 'model.backbones.'),
        'pre_norm': 'model.transformer.encoder.norm.weight' in sd,
        'position_embedding': 'learned' if 'model.backbones.0.1.row_embed.weight' in sd else 'sine',
        'mlp_input': _shape(sd, 'model.mlp.0.weight', 1),
    }


def probable_causes(expected, got):
    """Sentences naming the config values that most probably differ between the state dict a policy
    expects and a checkpoint's `got` (read back from the keys and shapes of both)."""
    ours, theirs = infer_config(expected), infer_config(got)
    causes = [f'checkpoint has {name}={theirs[name]} but this policy has {ours[name]}: check {CONFIG_HINTS[name]}'
              for name in CONFIG_HINTS if theirs[name] is not None and theirs[name] != ours[name]]
    if not any(k.startswith('model.') for k in got):
        causes.append("no key starts with 'model.': this is not an ACT/CNNMLP policy state dict")
    return causes
