"""The DETR-derived networks of ACT and CNNMLP, and the ResNet trunk they share.

Module and parameter names follow the original ACT code, so its checkpoints load unchanged:
    resnet.py             ResNet-18/34/50 trunk (torchvision names), frozen batch norm, ImageNet weights
    position_encoding.py  sine and learned 2-D position embeddings of a feature map
    backbone.py           trunk + position embedding, as `model.backbones.{i}`
    transformer.py        the DETR encoder-decoder with fused attention
    detr_vae.py           DETRVAE (the ACT network) and CNNMLP, with their builders
    reference.py          the original's unoptimised computation order, for equivalence checks
    state_dict.py         diagnosis of checkpoints that do not fit a model
"""
from .detr_vae import CNNMLP, DETRVAE, build_act_model, build_cnnmlp_model

__all__ = ['CNNMLP', 'DETRVAE', 'build_act_model', 'build_cnnmlp_model']
