"""Deployment: export to ONNX or TorchScript (export.py) and the torch-free runtime (runtime.py)."""
