"""``python -m goml_async`` runs the ``goml`` command line."""

import sys

from .cli import main

sys.exit(main())
