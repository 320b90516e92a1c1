from __future__ import annotations

import sys

from edge.bench.cli import main

sys.exit(main())
