#!/bin/sh
# Find the Python that builds the course's .venv (`make lab`, `make test`, every target that uses the venv).
#
# Supported: CPython 3.11 up to 3.14. The course needs 3.11 or newer (pyproject.toml: requires-python), and
# torch 2.13.0, the pinned release, publishes wheels for CPython 3.10 to 3.14 (PyPI, checked 2026-12); the
# newest of those is the ceiling. Keep MIN and MAX in step with both (tests/test_find_python.py checks MIN).
#
#   sh tools/find_python.sh              first supported interpreter on PATH (python3.11 ... python3.14,
#                                        then python3, python)
#   PYTHON=python3.12 sh tools/find_python.sh   only that one (a name on PATH or a path), checked the same way
#
# Prints one line, "X.Y.Z /real/path/to/python", and exits 0; otherwise says what it tried, which versions are
# supported and how to point at one, on stderr, and exits 1. Plain POSIX sh with builtins only: it runs
# before any virtual environment exists.

MIN_MINOR=11   # 3.11
MAX_MINOR=14   # 3.14
SUPPORTED="3.11, 3.12, 3.13 or 3.14"

# The probe runs isolated (-I: no PYTHON* variables, no user site) and reports the version and the real
# file behind the name (a pyenv shim or a symlink resolves to the interpreter itself).
PROBE='import os, sys; print("%d.%d.%d" % sys.version_info[:3], os.path.realpath(sys.executable))'

NL='
'
tried=""
note() { tried="$tried
  $1"; }

# check NAME: prints "X.Y.Z PATH" and returns 0 if NAME runs and is a supported version; else notes why.
check() {
    name=$1
    if ! command -v "$name" >/dev/null 2>&1; then
        note "$name: not found"
        return 1
    fi
    if ! out=$("$name" -I -c "$PROBE" 2>/dev/null) || [ -z "$out" ]; then
        err=$("$name" -I -c "$PROBE" 2>&1 >/dev/null)
        err=${err%%"$NL"*}   # its first line, e.g. a pyenv shim's "pyenv: python3.12: command not found"
        note "$name ($(command -v "$name")): does not run as Python 3${err:+: $err}"
        return 1
    fi
    out=${out##*"$NL"}   # the probe's line is the last one (a sitecustomize may print before it)
    version=${out%% *}
    path=${out#* }
    major=${version%%.*}
    rest=${version#*.}
    minor=${rest%%.*}
    case "$major$minor" in
        ''|*[!0-9]*) note "$name: unexpected answer '$out'"; return 1 ;;
    esac
    if [ "$major" -lt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -lt "$MIN_MINOR" ]; }; then
        note "$name: Python $version is too old"
        return 1
    fi
    if [ "$major" -gt 3 ] || [ "$minor" -gt "$MAX_MINOR" ]; then
        note "$name: Python $version is newer than torch 2.13 supports"
        return 1
    fi
    printf '%s %s\n' "$version" "$path"
    return 0
}

fail() {
    {
        printf 'No supported Python for the course. Supported: Python %s.\n' "$SUPPORTED"
        printf 'Tried:%s\n' "$tried"
        printf 'Install one of them, or point to one: make lab PYTHON=/path/to/python3.12\n'
    } >&2
    exit 1
}

if [ -n "${PYTHON:-}" ]; then
    check "$PYTHON" || fail
    exit 0
fi

n=$MIN_MINOR   # (sh has no local variables: check() uses its own names)
while [ "$n" -le "$MAX_MINOR" ]; do
    check "python3.$n" && exit 0
    n=$((n + 1))
done
check python3 && exit 0
check python && exit 0
fail
