from __future__ import annotations

import sys

from edge.flash.cli import main

sys.exit(main())
