"""Device side of the edge ML toolkit.

Everything under ``edge`` runs on the board and imports only numpy, Pillow,
paho-mqtt, msgspec and a TFLite runtime: never TensorFlow (a Raspberry Pi
cannot afford its ~10 s import and ~600 MB of RSS).
"""

from __future__ import annotations

__version__ = "0.1.0"
