"""``torchrun ... -m utils.launch MODULE:FUNCTION [--backend nccl]``: run a cluster job under torchrun.

The entry the README names; the launcher lives in ``utils.cluster.launch``.
"""

import sys

from utils.cluster.launch import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
