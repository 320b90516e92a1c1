"""Lazy TensorFlow import so ``edge-convert --help`` and input errors stay fast."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

# tfmot only works with tf-keras (Keras 2); this must be set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# The C++ converter logs every pass at INFO level; users need our report, not that.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_cache: dict[str, Any] = {}


def tf() -> ModuleType:
    if "tf" not in _cache:
        import tensorflow

        tensorflow.get_logger().setLevel("ERROR")
        _cache["tf"] = tensorflow
    return _cache["tf"]


def keras() -> ModuleType:
    if "keras" not in _cache:
        tf()
        import tf_keras

        _cache["keras"] = tf_keras
    return _cache["keras"]


def tfmot() -> ModuleType:
    if "tfmot" not in _cache:
        keras()
        import tensorflow_model_optimization

        _cache["tfmot"] = tensorflow_model_optimization
    return _cache["tfmot"]


def imported() -> bool:
    return "keras" in _cache
