"""Allow ``python -m geomlib``."""
import sys

from .cli import main

sys.exit(main())
