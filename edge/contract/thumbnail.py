"""The ``thumbnail`` payload: a small JPEG of the input frame, tagged with the prediction it belongs to.

The payload is a plain JPEG (an MQTT camera in Home Assistant, ``mosquitto_sub > f.jpg`` or a browser
shows it as is). Its first segment after the start-of-image marker is a JPEG comment (COM) holding
a short JSON object that ties it to its prediction::

    FF D8  FF FE  <length: 2 bytes, big-endian, counting itself>  {"format":"edge-thumbnail/1","seq":12,"ts":"..."}  <the rest of the JPEG>

``seq`` and ``ts`` are the prediction's own, so a subscriber pairs the two whatever order they
arrive in (the prediction is QoS 1 through the spool, the thumbnail QoS 0 straight away).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

FORMAT = "edge-thumbnail/1"
_SOI, _COM = b"\xff\xd8", b"\xff\xfe"
HEADER_ROOM = 256  # the most the COM segment takes (a byte cap leaves this much room for it)


@dataclass(frozen=True)
class Tag:
    seq: int
    ts: str


def tag(jpeg: bytes, seq: int, ts: str) -> bytes:
    """``jpeg`` with the COM segment naming its prediction right after the start-of-image marker."""
    if not jpeg.startswith(_SOI):
        raise ValueError("not a JPEG (no start-of-image marker)")
    text = json.dumps({"format": FORMAT, "seq": seq, "ts": ts}, separators=(",", ":")).encode()
    return _SOI + _COM + struct.pack(">H", len(text) + 2) + text + jpeg[2:]


def read_tag(payload: bytes) -> Tag | None:
    """The tag of a thumbnail payload; None when it is not a JPEG starting with an edge-thumbnail COM."""
    if len(payload) < 6 or not payload.startswith(_SOI + _COM):
        return None
    (length,) = struct.unpack(">H", payload[4:6])
    try:
        head: Any = json.loads(payload[6 : 4 + length])
    except ValueError:
        return None
    if (
        not isinstance(head, dict)
        or head.get("format") != FORMAT
        or not isinstance(head.get("seq"), int)
        or isinstance(head.get("seq"), bool)
        or not isinstance(head.get("ts"), str)
    ):
        return None
    return Tag(head["seq"], head["ts"])
