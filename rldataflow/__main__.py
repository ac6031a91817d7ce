"""``python -m rldataflow`` is the ``rldataflow`` command."""

import sys

from rldataflow.cli import main

sys.exit(main())
