"""Build the course's static website (`make site`): Jupyter Book over the committed notebooks and lessons.

The book's configuration is in book/ (_config.yml, _toc.yml, the landing page index.md). Nothing is executed:
each notebook page shows the outputs committed with the notebook, the ones strict nbval checks in CI. The build
is strict (every Sphinx warning, e.g. a link to a missing page or section, fails it) and complete (no reuse of
an earlier build), so what passes here passes in CI.

    python -m tools.site                 -> _site/_build/html/index.html
    python -m tools.site --output DIR    -> DIR/_build/html/index.html
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
OUTPUT = ROOT / "_site"


def html_dir(output: Path = OUTPUT) -> Path:
    """Where the pages of a build into `output` are (Jupyter Book writes them under _build/html)."""
    return Path(output) / "_build" / "html"


def build(output: Path = OUTPUT, quiet: bool = True) -> Path:
    """Build the website into `output` and return the folder of its HTML pages; raises on any warning."""
    cmd = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
        "build", str(ROOT), "--config", str(BOOK / "_config.yml"), "--toc", str(BOOK / "_toc.yml"),
        "--path-output", str(output), "--all", "-W", "--keep-going",
    ] + (["-q"] if quiet else [])
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"the site did not build cleanly (exit {result.returncode}):\n"
                           f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    index = html_dir(output) / "index.html"
    if not index.exists():
        raise RuntimeError(f"the build finished but wrote no {index}")
    return html_dir(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="build folder (default: _site)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        pages = build(args.output)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"Site built in {time.perf_counter() - start:.1f} s: {pages / 'index.html'}")
    print("Open it in a browser (file://), or serve it: python -m http.server -d " + str(pages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
