"""Run every benchmark module (or the ones named): `python -m benchmarks [fp8 simulate ...]`."""

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [f"bench_{n.removeprefix('bench_')}" for n in argv]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"Unknown benchmark(s) {unknown}; available: {[n.removeprefix('bench_') for n in names]}")
        return 2
    for name in wanted or names:
        print(f"\n=== {name.removeprefix('bench_')} ===", flush=True)
        start = time.perf_counter()
        importlib.import_module(f"benchmarks.{name}").main()
        print(f"({name} took {time.perf_counter() - start:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
