"""Ganglion kernels: fused Triton kernels beside plain PyTorch references.

Ops: ``lif`` (float and Loihi 2 fixed-point LIF), ``wkv`` (SpikeGPT/RWKV-4 time mixing),
``gla`` (gated linear attention). Each op's public functions use the Triton kernel on CUDA
tensors and the reference elsewhere; ``GANGLION_KERNELS=0`` turns the kernels off
(``dispatch.py``).
"""
