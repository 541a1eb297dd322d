"""The one pinned list is the single source of truth: environment.yml installs exactly it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pinned(lines):
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_environment_yml_pip_section_equals_requirements():
    requirements = pinned((ROOT / "requirements.txt").read_text().splitlines())
    yml = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(yml) if re.match(r"\s*- pip:\s*$", line))
    pip_section = []
    for line in yml[start + 1 :]:
        match = re.match(r"\s+- (\S+)\s*$", line)
        if not match:
            break
        pip_section.append(match.group(1))
    assert pip_section == requirements


def test_every_requirement_is_pinned_exactly_and_torch_is_2_13():
    requirements = pinned((ROOT / "requirements.txt").read_text().splitlines())
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", r) for r in requirements), requirements
    assert "torch==2.13.0" in requirements
    assert any("python=3.11" in line for line in (ROOT / "environment.yml").read_text().splitlines())


def test_installed_versions_match_the_pins():
    from importlib.metadata import version

    for requirement in pinned((ROOT / "requirements.txt").read_text().splitlines()):
        name, wanted = requirement.split("==")
        assert version(name).split("+")[0] == wanted, f"{name}: installed {version(name)}, pinned {wanted}"
