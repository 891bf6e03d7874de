"""mtssl: semi-supervised multi-task segmentation.

Tasks (segmentation, signed distance, boundary, distance) teach each other on unlabeled data
through differentiable cross-task transforms. Subpackages are imported on demand:
``mtssl.ops`` (tensor functions), ``mtssl.metrics``, ``mtssl.registry``, ``mtssl.config``,
``mtssl.nets`` and ``mtssl.tasks``; ``mtssl.build_model`` builds a multi-task model from a config.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["MultiTaskModel", "build_model", "load"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import mtssl`` stays light (no torch.nn model code until asked).
    if name in ("MultiTaskModel", "build_model"):
        from mtssl import model

        return getattr(model, name)
    if name == "load":
        from mtssl.engine.predictor import load

        return load
    raise AttributeError(f"module 'mtssl' has no attribute {name!r}")
