"""What the tests share: paths, a real mosquitto, an MQTT capture, the agent runner, fuzz mutators.

Registered as a pytest plugin (``tests.support.plugin``) by tests/conftest.py; benchmarks may import it too.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Third-party models and images the tests run (see tests/data/README.md for where each one comes from).
DATA = ROOT / "tests" / "data"
