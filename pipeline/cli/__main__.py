"""``python -m pipeline.cli``: the same as the ``shems`` script."""

import sys

from pipeline.cli import main

sys.exit(main())
