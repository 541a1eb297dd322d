"""The schedules the kit builds, by name, and the command line that prints them.

    python -m utils.schedules dualpipe --ranks 4 --microbatches 8

``make_schedule(name, n_ranks, n_microbatches)`` is the one way notebooks, the simulator's and the executor's
command lines and the widgets turn a name into a ``Schedule``. Names are read leniently (case, ``-`` and ``_``
ignored: ``"ZB-1P"`` is ``zb1p``, ``"1F1B_overlap"`` is ``1f1b-overlap``) by ``schedule_key``, the one place
that rule lives; ``SCHEDULE_NAMES`` lists them as the course writes them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from utils import inputs as arg
from utils.pipeline import runtime
from utils.pipeline.generators.bidirectional import dualpipe, dualpipev
from utils.pipeline.generators.chimera import chimera
from utils.pipeline.generators.linear import gpipe, naive, one_f_one_b, zb1p
from utils.pipeline.generators.overlapped import one_f_one_b_overlap
from utils.pipeline.generators.virtual import interleaved1f1b, zbv
from utils.pipeline.schedule import Schedule

_BUILDERS: dict[str, Callable[[int, int], Schedule]] = {
    "naive": naive,
    "gpipe": gpipe,
    "1f1b": one_f_one_b,
    "1f1b-overlap": one_f_one_b_overlap,
    "zb1p": zb1p,
    "dualpipe": dualpipe,
    "dualpipev": dualpipev,
    "interleaved1f1b": interleaved1f1b,
    "zbv": zbv,
    "chimera": chimera,  # DualPipe's ancestor (Li and Hoefler, SC'21): not a Table 2 row, not in the comparison
}
SCHEDULE_NAMES: tuple[str, ...] = tuple(_BUILDERS)
# The schedules of the DeepSeek-V3 report's Table 2 (1F1B, ZB1P, DualPipe) plus DualPipeV, whose row comes
# from the deepseek-ai/DualPipe repository: the ones with closed forms in utils.pipeline.table2.
TABLE2_SCHEDULES: tuple[str, ...] = ("1f1b", "zb1p", "dualpipe", "dualpipev")
# The schedules a fair comparison of DualPipe shows (GUIDE principle 7): 1F1B, the same 1F1B with its steady
# forward and backward overlapped (it hides the all-to-all too, with 1x parameters), ZB1P, DualPipe and
# DualPipeV, and the virtual-stage schedules every pipeline library offers: interleaved 1F1B and ZB-V
# (DualPipeV's placement without its F&B pairs). 1f1b-overlap is not a row of the report's Table 2; its
# closed forms live in table2 all the same; interleaved 1F1B's and ZB-V's in virtual_stages.
COMPARED_SCHEDULES: tuple[str, ...] = ("1f1b", "1f1b-overlap", "zb1p", "dualpipe", "dualpipev", "interleaved1f1b",
                                       "zbv")
# Model chunks one rank's share of the model (1/PP of it) is cut into, where it is more than one: each stage
# of these schedules holds 1/v of a 1F1B stage, so on the same model it costs 1/v as much (virtual stages).
# DualPipe keeps two whole 1/PP stages (mirrored copies), so it is not listed.
CHUNKS_PER_RANK: dict[str, int] = {"dualpipev": 2, "interleaved1f1b": 2, "zbv": 2}


def schedule_key(name) -> str:
    """The canonical spelling of a schedule name: lower case, without ``-`` and ``_``."""
    if not isinstance(name, str):
        arg.fail("name", "a schedule name (a string)", name, where="schedule_key", error=arg.InputTypeError)
    return name.lower().replace("-", "").replace("_", "")


_NAME_OF_KEY: dict[str, str] = {schedule_key(n): n for n in SCHEDULE_NAMES}


def schedule_name(name) -> str:
    """The name of ``name`` as SCHEDULE_NAMES writes it (``"1F1B_Overlap"`` -> ``"1f1b-overlap"``).

    Raises ValueError, listing the names the kit builds, for a schedule it does not know.
    """
    if not isinstance(name, str):
        arg.fail("name", f"a schedule name, one of {', '.join(SCHEDULE_NAMES)}", name, where="schedule_name",
                 error=arg.InputTypeError)
    found = _NAME_OF_KEY.get(schedule_key(name))
    if found is None:
        raise arg.InputError(
            f"Unknown schedule {name!r}: the kit builds {', '.join(SCHEDULE_NAMES)} (the schedules compared in "
            f"the DeepSeek-V3 report's Table 2, the 1F1B communication baseline with overlapped pairs, plus naive, GPipe "
            f"and Chimera for reference)."
        )
    return found


def make_schedule(name: str, n_ranks: int, n_microbatches: int) -> Schedule:
    """Build the schedule called ``name`` (one of SCHEDULE_NAMES) for ``n_ranks`` and ``n_microbatches``.

    The build allocates one Action per action and makes no reference cycles, so Python's cyclic garbage
    collector is paused while it runs, as in the simulator (``utils.pipeline.runtime``): in a notebook its
    collections would rescan the kernel's whole heap, about half of building a large schedule.
    """
    builder = _BUILDERS[schedule_name(name)]
    with runtime.cyclic_gc_paused():
        return builder(n_ranks, n_microbatches)


def main(argv: list[str] | None = None) -> int:
    """Command line: print one line per rank of action strings (bad input: ``error: <the rule>``, status 2)."""
    return arg.run_command(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = arg.ArgumentParser(prog="python -m utils.schedules", description=main.__doc__)
    parser.add_argument("name", help=", ".join(SCHEDULE_NAMES))
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--microbatches", type=int, required=True)
    args = parser.parse_args(argv)
    schedule = make_schedule(args.name, args.ranks, args.microbatches)
    print("\n".join(schedule.rank_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
