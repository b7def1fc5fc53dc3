"""``python -m keysafe``: the same as the ``keysafe`` command."""

import sys

from keysafe.cli.entry import main

sys.exit(main())
