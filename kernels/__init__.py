"""Ganglion kernels."""
