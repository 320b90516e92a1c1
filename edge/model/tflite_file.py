"""Read the structure of a ``.tflite`` file without any TFLite runtime.

A small, bounds-checked FlatBuffers reader for the parts of the TFLite schema
that tools need before (or instead of) loading a model: the file identifier,
the operator codes with their versions, and the tensors of each subgraph.
Every offset is checked against the buffer, so hostile or truncated files
raise :class:`TFLiteFormatError` instead of reading out of bounds: this is
what lets the agent refuse a bad model before the runtime ever sees it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from edge.model._schema_tables import BUILTIN_OPERATORS, TENSOR_TYPES

FILE_IDENTIFIER = b"TFL3"
_CUSTOM = 32  # BuiltinOperator.CUSTOM


class TFLiteFormatError(ValueError):
    """The bytes are not a well-formed TFLite flatbuffer."""


@dataclass(frozen=True)
class OpCode:
    name: str  # builtin op name (e.g. "CONV_2D") or the custom op's name
    version: int
    custom: bool


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dynamic dimension
    dtype: str  # schema name, e.g. "UINT8", "INT8", "FLOAT32"
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]


@dataclass(frozen=True)
class SubgraphInfo:
    name: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    operators: tuple[str, ...]  # op name of each operator, in execution order
    tensors: tuple[TensorInfo, ...]


@dataclass(frozen=True)
class ModelInfo:
    schema_version: int
    description: str
    op_codes: tuple[OpCode, ...]
    subgraphs: tuple[SubgraphInfo, ...]
    metadata_names: tuple[str, ...]
    size_bytes: int

    @property
    def custom_ops(self) -> tuple[str, ...]:
        return tuple(sorted({op.name for op in self.op_codes if op.custom}))

    @property
    def max_op_versions(self) -> dict[str, int]:
        versions: dict[str, int] = {}
        for op in self.op_codes:
            versions[op.name] = max(versions.get(op.name, 0), op.version)
        return versions


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.n = len(buf)

    def _need(self, pos: int, size: int) -> None:
        if pos < 0 or pos + size > self.n:
            raise TFLiteFormatError(
                f"offset {pos}+{size} is outside the file ({self.n} bytes): the file is truncated or corrupt"
            )

    def u8(self, pos: int) -> int:
        self._need(pos, 1)
        return self.buf[pos]

    def u16(self, pos: int) -> int:
        self._need(pos, 2)
        return int(struct.unpack_from("<H", self.buf, pos)[0])

    def i32(self, pos: int) -> int:
        self._need(pos, 4)
        return int(struct.unpack_from("<i", self.buf, pos)[0])

    def u32(self, pos: int) -> int:
        self._need(pos, 4)
        return int(struct.unpack_from("<I", self.buf, pos)[0])

    def i64(self, pos: int) -> int:
        self._need(pos, 8)
        return int(struct.unpack_from("<q", self.buf, pos)[0])

    def f32(self, pos: int) -> float:
        self._need(pos, 4)
        return float(struct.unpack_from("<f", self.buf, pos)[0])

    # -- tables ---------------------------------------------------------------
    def field(self, table: int, index: int) -> int:
        """Absolute position of field ``index`` of the table at ``table``, or 0 when absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        if vsize < 4 or vsize % 2:
            raise TFLiteFormatError(f"invalid vtable size {vsize} at offset {vtable}")
        slot = 4 + 2 * index
        if slot >= vsize:
            return 0
        off = self.u16(vtable + slot)
        return table + off if off else 0

    def indirect(self, pos: int) -> int:
        target = pos + self.u32(pos)
        self._need(target, 4)
        return target

    def vector(self, table: int, index: int, elem_size: int) -> tuple[int, int]:
        """(start, length) of a vector field; (0, 0) when absent."""
        pos = self.field(table, index)
        if not pos:
            return 0, 0
        vec = self.indirect(pos)
        length = self.u32(vec)
        self._need(vec + 4, length * elem_size)
        return vec + 4, length

    def tables(self, table: int, index: int) -> list[int]:
        start, length = self.vector(table, index, 4)
        return [self.indirect(start + 4 * i) for i in range(length)]

    def string(self, table: int, index: int) -> str:
        pos = self.field(table, index)
        if not pos:
            return ""
        s = self.indirect(pos)
        length = self.u32(s)
        self._need(s + 4, length)
        return self.buf[s + 4 : s + 4 + length].decode("utf-8", errors="replace")

    def scalar(self, table: int, index: int, kind: str, default: int | float = 0) -> int | float:
        pos = self.field(table, index)
        if not pos:
            return default
        return {"u8": self.u8, "i32": self.i32, "u32": self.u32}[kind](pos)

    def ints(self, table: int, index: int) -> tuple[int, ...]:
        start, length = self.vector(table, index, 4)
        return tuple(self.i32(start + 4 * i) for i in range(length))


def _tensor(r: _Reader, t: int) -> TensorInfo:
    scale: tuple[float, ...] = ()
    zero: tuple[int, ...] = ()
    q = r.field(t, 4)
    if q:
        qt = r.indirect(q)
        start, n = r.vector(qt, 2, 4)
        scale = tuple(r.f32(start + 4 * i) for i in range(n))
        start, n = r.vector(qt, 3, 8)
        zero = tuple(r.i64(start + 8 * i) for i in range(n))
    ttype = int(r.scalar(t, 1, "u8"))
    shape = r.ints(t, 0)
    return TensorInfo(
        name=r.string(t, 3),
        shape=shape,
        shape_signature=r.ints(t, 7) or shape,
        dtype=TENSOR_TYPES.get(ttype, f"TYPE_{ttype}"),
        scale=scale,
        zero_point=zero,
    )


def parse(data: bytes) -> ModelInfo:
    """Parse the model structure from bytes; raise :class:`TFLiteFormatError` on anything malformed."""
    if len(data) < 8:
        raise TFLiteFormatError(
            f"file is {len(data)} bytes: too short to be a TFLite model (empty or truncated)"
        )
    if data[4:8] != FILE_IDENTIFIER:
        raise TFLiteFormatError(
            f"file identifier is {data[4:8]!r}, expected {FILE_IDENTIFIER!r}: this is not a TFLite model "
            "(convert Keras/SavedModel files with edge-convert first)"
        )
    r = _Reader(data)
    root = r.indirect(0)
    op_codes = []
    for oc in r.tables(root, 1):
        deprecated = int(r.scalar(oc, 0, "u8"))
        builtin = int(r.scalar(oc, 3, "i32"))
        code = max(deprecated, builtin)
        version = int(r.scalar(oc, 2, "i32", 1))
        if code == _CUSTOM:
            op_codes.append(OpCode(r.string(oc, 1) or "CUSTOM", version, True))
        else:
            op_codes.append(OpCode(BUILTIN_OPERATORS.get(code, f"BUILTIN_{code}"), version, False))
    subgraphs = []
    for sg in r.tables(root, 2):
        tensors = tuple(_tensor(r, t) for t in r.tables(sg, 0))

        def pick(
            indices: tuple[int, ...], tensors: tuple[TensorInfo, ...] = tensors
        ) -> tuple[TensorInfo, ...]:
            for i in indices:
                if not 0 <= i < len(tensors):
                    raise TFLiteFormatError(f"tensor index {i} out of range (subgraph has {len(tensors)})")
            return tuple(tensors[i] for i in indices)

        ops = []
        for op in r.tables(sg, 3):
            idx = int(r.scalar(op, 0, "u32"))
            if idx >= len(op_codes):
                raise TFLiteFormatError(f"operator code index {idx} out of range ({len(op_codes)} codes)")
            ops.append(op_codes[idx].name)
        subgraphs.append(
            SubgraphInfo(
                name=r.string(sg, 4),
                inputs=pick(r.ints(sg, 1)),
                outputs=pick(r.ints(sg, 2)),
                operators=tuple(ops),
                tensors=tensors,
            )
        )
    if not subgraphs:
        raise TFLiteFormatError("model has no subgraph: nothing to run")
    metadata = tuple(r.string(m, 0) for m in r.tables(root, 6))
    return ModelInfo(
        schema_version=int(r.scalar(root, 0, "u32")),
        description=r.string(root, 3),
        op_codes=tuple(op_codes),
        subgraphs=tuple(subgraphs),
        metadata_names=metadata,
        size_bytes=len(data),
    )


def read(path: str | Path) -> ModelInfo:
    return parse(Path(path).read_bytes())


# -- deep verification (guarded loading) -----------------------------------------------------------
# Byte size of one element per tensor type; sub-byte and opaque types are left out (not size-checked).
_ITEM_BYTES = {
    "FLOAT32": 4,
    "FLOAT16": 2,
    "INT32": 4,
    "UINT8": 1,
    "INT64": 8,
    "BOOL": 1,
    "INT16": 2,
    "COMPLEX64": 8,
    "INT8": 1,
    "FLOAT64": 8,
    "COMPLEX128": 16,
    "UINT64": 8,
    "UINT32": 4,
    "UINT16": 2,
    "BFLOAT16": 2,
    "FLOAT8_E4M3FN": 1,
    "FLOAT8_E5M2": 1,
}


@dataclass(frozen=True)
class Verified:
    """What :func:`verify` learnt on top of :class:`ModelInfo`."""

    info: ModelInfo
    buffers: int
    constant_bytes: int  # bytes of weights stored in the file
    activation_bytes: int  # bytes of the non-constant tensors (a lower bound of the runtime's arena)
    largest_tensor_bytes: int


def verify(
    data: bytes, *, max_tensor_bytes: int = 1 << 30, max_dims: int = 8, max_activation_bytes: int = 1 << 30
) -> Verified:
    """Check what the runtime trusts blindly: buffer indices and sizes, operator tensor indices, shapes.

    :func:`parse` only proves the offsets it follows are inside the file; this also proves
    that every constant tensor's data is exactly as large as its shape says (a mutated shape
    over a small buffer is how crafted models read out of bounds), that operators only
    reference existing tensors, and that no tensor asks for an absurd allocation.
    Raises :class:`TFLiteFormatError` naming the first problem.
    """
    info = parse(data)
    r = _Reader(data)
    root = r.indirect(0)
    buffer_sizes: list[int] = []
    for b in r.tables(root, 4):
        start, length = r.vector(b, 0, 1)
        offset_pos, size_pos = r.field(b, 1), r.field(b, 2)
        if offset_pos and size_pos:  # models > 2 GB keep weights after the flatbuffer
            off, size = r.i64(offset_pos), r.i64(size_pos)
            if off < 0 or size < 0 or off + size > len(data):
                raise TFLiteFormatError(
                    f"buffer {len(buffer_sizes)} points at bytes {off}..{off + size}, "
                    f"outside the file ({len(data)} bytes)"
                )
            length = size
        buffer_sizes.append(length)
    if not buffer_sizes:  # hand-built models may omit the table: buffer 0 is then the implicit empty one
        buffer_sizes.append(0)
    constant = activation = largest = 0
    for s, sg in enumerate(r.tables(root, 2)):
        tensor_tables = r.tables(sg, 0)
        for t_index, t in enumerate(tensor_tables):
            shape = r.ints(t, 0)
            if len(shape) > max_dims:
                raise TFLiteFormatError(
                    f"subgraph {s} tensor {t_index} has {len(shape)} dimensions (at most {max_dims} expected)"
                )
            if any(d < 0 for d in shape):
                raise TFLiteFormatError(f"subgraph {s} tensor {t_index} has a negative dimension {shape}")
            ttype = TENSOR_TYPES.get(int(r.scalar(t, 1, "u8")), "")
            elements = 1
            for d in shape:
                elements *= d
            nbytes = elements * _ITEM_BYTES.get(ttype, 1)
            if nbytes > max_tensor_bytes:
                raise TFLiteFormatError(
                    f"subgraph {s} tensor {t_index} shape {list(shape)} needs {nbytes} "
                    f"bytes, over the {max_tensor_bytes}-byte limit"
                )
            largest = max(largest, nbytes)
            buf = int(r.scalar(t, 2, "u32"))
            if buf >= len(buffer_sizes):
                raise TFLiteFormatError(
                    f"subgraph {s} tensor {t_index} uses buffer {buf}, "
                    f"but the model has {len(buffer_sizes)} buffers"
                )
            if buffer_sizes[buf]:
                # Sparse tensors store fewer bytes than their dense shape: only dense ones are exact.
                if ttype in _ITEM_BYTES and not r.field(t, 6) and buffer_sizes[buf] != nbytes:
                    raise TFLiteFormatError(
                        f"subgraph {s} tensor {t_index} shape {list(shape)} {ttype} needs {nbytes} bytes "
                        f"but its buffer {buf} holds {buffer_sizes[buf]}"
                    )
                constant += buffer_sizes[buf]
            else:
                activation += nbytes
        if activation > max_activation_bytes:
            raise TFLiteFormatError(
                f"the model's tensors need at least {activation} bytes of memory, "
                f"over the {max_activation_bytes}-byte limit"
            )
        n = len(tensor_tables)
        for o_index, op in enumerate(r.tables(sg, 3)):
            for field_index in (1, 2, 8):  # inputs, outputs, intermediates
                for i in r.ints(op, field_index):
                    if i != -1 and not 0 <= i < n:  # -1 marks an omitted optional input
                        raise TFLiteFormatError(
                            f"subgraph {s} operator {o_index} references tensor {i} (subgraph has {n})"
                        )
    return Verified(
        info=info,
        buffers=len(buffer_sizes),
        constant_bytes=constant,
        activation_bytes=activation,
        largest_tensor_bytes=largest,
    )
