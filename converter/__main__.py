"""``python -m converter`` == ``edge-convert``."""

from __future__ import annotations

import sys

from converter.cli import main

sys.exit(main())
