"""Ganglion models."""
