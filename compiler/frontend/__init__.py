"""Stages 1-3: torch and ONNX in and out (models, training, fine-tuning, extraction). The only
subpackage that imports torch or onnx."""
