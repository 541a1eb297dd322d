"""A learner's own ``utils.py`` (or ``utils/`` folder) beside a notebook must not silently replace the kit.

Python puts the notebook's folder first on ``sys.path``, so a file named ``utils.py`` there would be imported
instead of the course library and every later cell would fail with a puzzling ``AttributeError``. The finder
below runs before Python's own: when ``import utils`` would find another ``utils`` than the kit, it raises an
ImportError that says which file hides the kit and what to do.

``make setup`` installs it into the course's virtual environment as a ``.pth`` file (``python -m utils._guard``),
which Python runs at start-up. This file is also executed directly by that ``.pth`` line (with ``runpy``), so it
uses the standard library only and never imports ``utils`` itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import sysconfig

KIT = os.path.dirname(os.path.abspath(__file__))  # .../utils
PTH_NAME = "dsv3_course_utils_guard.pth"


def shadow_message(found: str) -> str:
    return (
        f"'import utils' would load {found}, not the course library in {KIT}. A file or folder named 'utils' "
        f"beside your notebook (or earlier on sys.path) hides the kit, and every notebook cell that uses it "
        f"would fail. Rename yours (for example to my_utils.py) and restart the kernel."
    )


class KitGuard(importlib.abc.MetaPathFinder):
    """Refuses ``import utils`` when the first ``utils`` on sys.path is not the kit's."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "utils":
            return None
        spec = importlib.machinery.PathFinder.find_spec("utils", sys.path)
        if spec is None:
            return None  # not on sys.path: the editable install's own finder brings the kit
        if spec.origin and spec.origin != "namespace":
            where = spec.origin
        else:  # a folder without __init__.py
            where = next(iter(spec.submodule_search_locations or []), "?")
        folder = os.path.dirname(where) if where.endswith("__init__.py") else where
        if os.path.realpath(folder) == os.path.realpath(KIT):
            return None
        raise ImportError(shadow_message(where), name="utils", path=where)


def install() -> None:
    """Put the guard first on ``sys.meta_path`` (once)."""
    if not any(type(f).__name__ == "KitGuard" for f in sys.meta_path):
        sys.meta_path.insert(0, KitGuard())


def install_pth(site_packages: str | None = None) -> str:
    """Write the ``.pth`` line that installs the guard at every start of this environment's Python."""
    folder = site_packages or sysconfig.get_paths()["purelib"]
    target = os.path.join(folder, PTH_NAME)
    line = f"import runpy; runpy.run_path({os.path.abspath(__file__)!r}, run_name='dsv3_course_guard')\n"
    with open(target, "w") as out:
        out.write(line)
    return target


if __name__ == "dsv3_course_guard":  # run by the .pth line at start-up
    install()
elif __name__ == "__main__":
    print(f"installed {install_pth()}")
