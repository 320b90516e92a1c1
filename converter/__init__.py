"""edge-convert: Keras model -> pruned, quantization-aware-trained, int8 .tflite, with a measured report.

Host-only package (TensorFlow, tfmot). ``edge`` never imports it.
"""

from __future__ import annotations

from typing import Any

from converter.errors import ConvertError


def convert(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See :func:`converter.api.convert` (imported lazily: TensorFlow loads only when converting)."""
    from converter.api import convert as _convert

    return _convert(*args, **kwargs)


__all__ = ["ConvertError", "convert"]
