from __future__ import annotations

import sys

from edge.ota.cli import main

sys.exit(main())
