"""Run every benchmark module (or the ones named): `python -m benchmarks [fp8 simulate ...]`."""

import importlib
import pkgutil
import sys
import time
from pathlib import Path

from utils.inputs import ArgumentParser


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    available = [n.removeprefix("bench_") for n in names]
    parser = ArgumentParser(prog="python -m benchmarks",
                            description="Print the benchmark tables: each target as a ratio against a reference "
                                        "measured in the same run.")
    parser.add_argument("benchmarks", nargs="*", metavar="NAME",
                        help=f"the benchmarks to run, of {', '.join(available)} (default: all)")
    wanted = [f"bench_{n.removeprefix('bench_')}" for n in parser.parse_args(argv).benchmarks]
    unknown = sorted(n.removeprefix("bench_") for n in set(wanted) - set(names))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}: use one of {', '.join(available)}")
    for name in wanted or names:
        print(f"\n=== {name.removeprefix('bench_')} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name} took {time.perf_counter() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
