"""Ganglion runtime."""
