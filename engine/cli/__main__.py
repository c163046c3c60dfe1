"""`python -m engine.cli`: the `pledgewatch` command."""

import sys

from engine.cli.main import main

sys.exit(main())
