"""Policies: the interface (base.py), the registry by name (registry.py), ACT and CNNMLP (act.py),
Diffusion (diffusion.py, its networks in diffusion_nets.py), and the action chunker (chunker.py)
that turns a policy's chunks into one action per control step.

This file imports nothing, so the torch-free chunker can be imported without torch.
"""
