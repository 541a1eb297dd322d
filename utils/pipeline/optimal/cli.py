"""``python -m utils.optimal``: the best schedule for a small pipeline, found by CP-SAT, printed like a simulation.

    python -m utils.optimal --ranks 4 --microbatches 8 --placement bidirectional --split-backward --pairs \\
        --dispatch 0.5 --combine 0.5 --max-activations 5 --time-limit 30 --json
    python -m utils.optimal --precompute          # refresh data/optimal_schedules.json (notebook 05b)

``--json`` prints ``makespan``, ``proven_optimal``, ``lower_bound``, ``schedule`` (per rank, the action strings
of ``python -m utils.schedules``) and the per-rank budget of ``python -m utils.simulate --json``. Bad input:
exit status 2 and one line ``error: <the rule>``.
"""

from __future__ import annotations

import json
import sys

from utils import inputs as arg
from utils.pipeline.costs import CostModel
from utils.pipeline.optimal.problem import PLACEMENTS
from utils.pipeline.simulate import add_overlap_arguments, ascii_timeline, chunk_factors


def main(argv: list[str] | None = None) -> int:
    """Command line: search the best schedule and print it (or JSON); ``--precompute`` refreshes the stored
    searches of notebook 05b. Bad input gives exit status 2 and one line ``error: <the rule>`` on stderr."""
    return arg.run_command(_main, argv)


def _parser() -> arg.ArgumentParser:
    parser = arg.ArgumentParser(prog="python -m utils.optimal", description=main.__doc__)
    parser.add_argument("--ranks", type=int)
    parser.add_argument("--microbatches", type=int)
    for flag, default in (("F", 1.0), ("B", 2.0), ("W", 1.0), ("FB", None), ("p2p", 0.0), ("dispatch", 0.0),
                          ("combine", 0.0)):
        parser.add_argument(f"--{flag}", type=float, default=default)
    add_overlap_arguments(parser)
    parser.add_argument("--placement", choices=PLACEMENTS, default="linear",
                        help="linear: a stage per rank; v: ZB-V's and DualPipeV's; bidirectional: DualPipe's")
    parser.add_argument("--split-backward", action="store_true", help="a backward may run as I then W")
    parser.add_argument("--pairs", action="store_true", help="a forward and a backward may run as one F&B pair")
    parser.add_argument("--max-activations", type=int, default=None, help="at most K activations per rank")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds the solver may search (default 10; with --precompute, each case's own)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--precompute", action="store_true",
                        help="refresh data/optimal_schedules.json, the searches notebook 05b reads")
    return parser


def _main(argv: list[str] | None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.precompute:
        from utils.pipeline.optimal.precomputed import precompute

        path = precompute(time_limit=args.time_limit, progress=print)
        print(f"wrote {path}")
        return 0
    if args.ranks is None or args.microbatches is None:
        parser.error("--ranks and --microbatches are required (or --precompute)")
    from utils.pipeline.optimal.solve import optimal_schedule

    costs = CostModel(args.F, args.B, args.W, args.FB, args.p2p, args.dispatch, args.combine,
                      comm_share=args.comm_share, chunk_scale=chunk_factors(args.chunk_scale))
    found = optimal_schedule(args.ranks, args.microbatches, costs, args.placement,
                             split_backward=args.split_backward, pairs=args.pairs,
                             max_activations=args.max_activations,
                             time_limit=10.0 if args.time_limit is None else args.time_limit)
    if args.json:
        print(json.dumps(found.as_dict(), indent=1))
        return 0
    proof = "proven optimal" if found.proven_optimal else \
        f"the best found in {found.settings['time_limit']:g} s; no schedule is shorter than {found.lower_bound:g}"
    print(f"optimal schedule: makespan {found.makespan:g} ({proof}); started from {found.start} "
          f"({found.start_makespan:g})")
    print("\n".join(found.schedule.rank_lines()))
    print(ascii_timeline(found.timeline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
