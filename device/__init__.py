"""Ganglion device."""
