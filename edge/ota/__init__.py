"""Signed over-the-air model updates: sign and push on the host, verify, install and roll back on the device.

- :mod:`edge.ota.keys` — Ed25519 key pairs (``edge-flash keygen``).
- :mod:`edge.ota.manifest` — the signed manifest and the one-message wire format of ``model/set``.
- :mod:`edge.ota.install` — the device's model store: atomic install, health check, switch, rollback,
  and crash recovery at start-up.
- :mod:`edge.ota.push` — ``edge-flash push-model``: send an update and wait for the device's answer.

``cryptography`` (the ``signing`` extra) is imported only when signing or verifying.
"""

from __future__ import annotations

from edge.ota.manifest import REFUSAL_REASONS, Manifest, UpdateRefusedError, VerifiedUpdate

__all__ = ["REFUSAL_REASONS", "Manifest", "UpdateRefusedError", "VerifiedUpdate"]
