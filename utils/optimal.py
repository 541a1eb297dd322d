"""``python -m utils.optimal --ranks R --microbatches M [--placement ...] [--json]``: the best schedule, by a solver.

The entry the README and notebook 05b name. The search lives in ``utils.pipeline.optimal``.
"""

import sys

from utils.pipeline.optimal.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
