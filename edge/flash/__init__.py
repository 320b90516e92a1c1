"""edge-flash: put the agent, its model and its config on a Raspberry Pi.

Host side (``bundle``, ``ssh``, ``sd``) uses only the standard library and the
system's OpenSSH, mtools and sfdisk: no TensorFlow, no runtime. ``selfcheck``
is the one module that runs on the device, from the freshly installed venv.
"""

from __future__ import annotations

BUNDLE_DIR = "edge-bundle"  # every bundle unpacks into this one top-level directory
