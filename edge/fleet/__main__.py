import sys

from edge.fleet.cli import main

sys.exit(main())
