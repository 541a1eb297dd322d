"""``python -m utils.schedules NAME --ranks R --microbatches M``: print a schedule, one line per rank.

The entry the README and the notebooks name. The types live in ``utils.pipeline.schedule``, the names and
the command line in ``utils.pipeline.registry``; the names this module always offered are kept here.
"""

import sys

from utils.pipeline.registry import SCHEDULE_NAMES, TABLE2_SCHEDULES, main, make_schedule
from utils.pipeline.schedule import (
    KIND_NAMES,
    KINDS,
    Action,
    ActionLike,
    OverlappedAction,
    Schedule,
    action_parts,
    parse_action,
)
from utils.pipeline.validation import validate

__all__ = ["KINDS", "KIND_NAMES", "SCHEDULE_NAMES", "TABLE2_SCHEDULES", "Action", "ActionLike", "OverlappedAction",
           "Schedule", "action_parts", "main", "make_schedule", "parse_action", "validate"]

if __name__ == "__main__":
    sys.exit(main())
