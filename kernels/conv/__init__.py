"""Compiled 2-D convolutions for small CPU batches (numba), in oneDNN's arithmetic.

``cpu.py`` holds the loop and ``scan_pool.py`` the one pass of a convolution, its neurons and
their 2x2 pool: both torch-free, so ONNX Runtime's layer-wise run (a node without torch) calls
them too. ``layer.py`` wraps them for torch tensors (``CpuConv2d``, the spiking ``Conv2d``
layer's CPU path), checking per layer and input shape that the loop gives ``F.conv2d``'s bits.
"""
