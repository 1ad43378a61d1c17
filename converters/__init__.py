"""Ganglion converters."""
