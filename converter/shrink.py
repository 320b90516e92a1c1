"""Lossless .tflite size reduction: share identical quantization vectors.

Per-channel int8 models store, for every weight and bias tensor, a float32 scale and an *int64* zero
point per output channel. The zero points are all 0 for weights and biases, so the TF converter writes
the same vectors again and again (about 280 KB of MobileNetV2's 3.9 MB). FlatBuffers allow several
tables to point at one vector, so we re-serialize the model with each distinct vector written once.
The tensors, buffers and ops are unchanged: the model computes exactly the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

_BUFFER_ALIGNMENT = 16  # what the TFLite converter uses for constant buffers (kernels read them in place)


def _schema() -> Any:
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def share_quantization_vectors(data: bytes, metadata: Mapping[str, bytes] | None = None) -> bytes:
    """Return an equivalent .tflite where identical quantization vectors are stored once.

    ``metadata`` entries (name -> bytes) are added to the model's metadata list in the same pass,
    replacing entries of the same name (the runtimes ignore names they do not know).
    """
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for name, blob in (metadata or {}).items():
        data_array = np.frombuffer(blob, dtype=np.uint8)
        existing = [m for m in (model.metadata or []) if m.name.decode() == name]
        if existing:  # rewrite the entry's own buffer: no orphan buffer left behind
            model.buffers[existing[0].buffer].data = data_array
            continue
        buf = schema.BufferT()
        buf.data = data_array
        model.buffers.append(buf)
        entry = schema.MetadataT()
        entry.name, entry.buffer = name, len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    cache: dict[tuple[str, bytes], int] = {}

    def vector(builder: Any, values: Any, dtype: str) -> int:
        arr = np.ascontiguousarray(np.asarray(values, dtype=dtype))
        key = (dtype, arr.tobytes())
        if key not in cache:
            cache[key] = builder.CreateNumpyVector(arr)
        return cache[key]

    class SharedQuantization(schema.QuantizationParametersT):  # type: ignore[name-defined]
        def Pack(self, builder: Any) -> int:  # noqa: N802 (generated API name)
            fields = {
                name: vector(builder, getattr(self, attr), dt)
                for name, attr, dt in (
                    ("Min", "min", "<f4"),
                    ("Max", "max", "<f4"),
                    ("Scale", "scale", "<f4"),
                    ("ZeroPoint", "zeroPoint", "<i8"),
                )
                if getattr(self, attr) is not None
            }
            details = self.details.Pack(builder) if self.details is not None else None
            schema.QuantizationParametersStart(builder)
            for name, off in fields.items():
                getattr(schema, f"QuantizationParametersAdd{name}")(builder, off)
            schema.QuantizationParametersAddDetailsType(builder, self.detailsType)
            if details is not None:
                schema.QuantizationParametersAddDetails(builder, details)
            schema.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
            return schema.QuantizationParametersEnd(builder)

    class AlignedBuffer(schema.BufferT):  # type: ignore[name-defined]
        def Pack(self, builder: Any) -> int:  # noqa: N802
            off = None
            if self.data is not None:
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), _BUFFER_ALIGNMENT)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head : builder.head + len(raw)] = raw
                off = builder.EndVector(len(raw)) if _end_vector_takes_len(builder) else builder.EndVector()
            schema.BufferStart(builder)
            if off is not None:
                schema.BufferAddData(builder, off)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    for sub in model.subgraphs or []:
        for tensor in sub.tensors or []:
            if tensor.quantization is not None:
                tensor.quantization.__class__ = SharedQuantization
    for buf in model.buffers or []:
        buf.__class__ = AlignedBuffer
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _end_vector_takes_len(builder: Any) -> bool:
    import inspect

    return len(inspect.signature(builder.EndVector).parameters) >= 1
