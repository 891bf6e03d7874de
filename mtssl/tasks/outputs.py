"""Output names: what a model's forward returns is keyed ``<head>`` or ``<head>/<branch>``.

A head is one task's output layer (``seg``, ``sdf``); a backbone with several decoders (MC-Net) gives
each head once per decoder, the first as ``seg``, the others as ``seg/1``, ``seg/2``. Every part of mtssl
that reads or builds such a name does it here.
"""

from __future__ import annotations

__all__ = ["flat", "head_of", "output_name"]


def output_name(head: str, branch: int = 0) -> str:
    """The key of ``head`` on decoder ``branch``: ``output_name("seg", 1) == "seg/1"``, and ``"seg"`` on branch 0."""
    return head if branch == 0 else f"{head}/{branch}"


def head_of(output: str) -> str:
    """The head an output belongs to: ``head_of("seg/1") == "seg"``."""
    return output.partition("/")[0]


def flat(output: str) -> str:
    """An output name without its slash, for a term's and a loss's name: ``flat("seg/1") == "seg1"``."""
    return output.replace("/", "")
