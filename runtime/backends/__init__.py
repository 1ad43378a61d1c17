"""Backends: torch (reference), onnxruntime, tensorrt, lava. See ganglion.runtime.session."""
