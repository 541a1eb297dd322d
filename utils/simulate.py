"""``python -m utils.simulate NAME --ranks R --microbatches M [--F ... --dispatch ... --json]``.

The entry the README and the notebooks name. The simulator lives in ``utils.pipeline.simulate``, the cost
model in ``utils.pipeline.costs``; the names this module always offered are kept here.
"""

import sys

from utils.pipeline.costs import CostModel
from utils.pipeline.simulate import ascii_timeline, main, simulate

__all__ = ["CostModel", "ascii_timeline", "main", "simulate"]

if __name__ == "__main__":
    sys.exit(main())
