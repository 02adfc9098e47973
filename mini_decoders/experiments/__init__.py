"""Experiments: what runs models against each other (on top of the package; nothing below imports it)."""
