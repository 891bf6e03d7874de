"""Backbones: networks that map an image to decoder features for the task heads."""
