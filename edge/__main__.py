"""``python -m edge`` is ``edge-agent``."""

from __future__ import annotations

import sys

from edge.agent.cli import main

sys.exit(main())
