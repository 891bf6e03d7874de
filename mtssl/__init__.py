"""mtssl: semi-supervised multi-task segmentation.

Tasks (segmentation, signed distance, boundary, distance) teach each other on unlabeled data
through differentiable cross-task transforms. Subpackages are imported on demand:
``mtssl.ops`` (tensor functions), ``mtssl.metrics``, ``mtssl.registry``, ``mtssl.config``.
"""

__version__ = "0.1.0"
