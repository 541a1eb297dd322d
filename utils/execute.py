"""``python -m utils.execute --schedule NAME --microbatches M [--ranks R | under torchrun]``: run a schedule.

The entry the README names. The executor lives in ``utils.pipeline.executor``; the names this module always
offered are kept here.
"""

import sys

from utils.pipeline.executor.execute import (
    ExecutionResult,
    assemble_result,
    compare_to_reference,
    execute,
    main,
    pacing_from_costs,
)

__all__ = ["ExecutionResult", "assemble_result", "compare_to_reference", "execute", "main", "pacing_from_costs"]

if __name__ == "__main__":
    sys.exit(main())
