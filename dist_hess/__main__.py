"""``python -m dist_hess ...`` is the ``dist-hess`` command."""
import sys

from .cli import main

sys.exit(main())
