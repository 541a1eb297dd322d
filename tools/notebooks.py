"""Re-execute course notebooks in place, top to bottom, in a fresh kernel (`make notebooks`).

Strict nbval compares every stored output, so stored outputs must come from one clean run:
this is the one command that produces them. It also re-applies the slide rule (tools/slides.py), so the
slide boundaries follow every edit of the notebook.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tools.slides import apply as apply_slide_rule

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def execute_in_place(path: Path, timeout: int = 600, kernel_name: str = "python3") -> float:
    """Run every cell of the notebook at `path` in a fresh kernel and save it; return seconds taken."""
    nb = nbformat.read(path, as_version=4)
    apply_slide_rule(nb)
    nb.metadata["kernelspec"] = {
        "name": kernel_name,
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(path.parent)}}
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    tidy(nb)
    nbformat.write(nb, path)
    return elapsed


def is_progress_bar(output) -> bool:
    """Whether a stored output is a tqdm progress bar: a widget whose text copy reads like ``desc: 0%|...|``."""
    data = output.get("data", {})
    return WIDGET_VIEW in data and "%|" in "".join(data.get("text/plain", ""))


def tidy(nb) -> None:
    """What a run leaves that carries no lesson, removed in place: execution timestamps (new on every run),
    saved widget state and progress bars.

    Saved widget state holds every rendered PNG (hundreds of KB per notebook); widgets come alive when the
    learner runs the cells, so the stored state only bloats the repository. Without it a progress bar's stored
    copy is its first frame, "0/150", which reads as a run that never started: a bar is live feedback while
    the cell runs, so it is not stored.
    """
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not is_progress_bar(output)]
    nb.metadata.pop("widgets", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks in place")
    run.add_argument("paths", nargs="+", type=Path)
    run.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    for path in args.paths:
        elapsed = execute_in_place(path, timeout=args.timeout)
        print(f"{path}: executed in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
