from __future__ import annotations

import sys

from edge.watch.cli import main

sys.exit(main())
