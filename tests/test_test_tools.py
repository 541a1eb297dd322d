"""The tools `make test` runs its stages with (tools/stages.py) and reports the slowest tests with
(tools/slowest_tests.py): a failing stage fails the run and skips what follows, times are printed, and the
slowest tests and files are read from pytest's JUnit XML in either of its formats."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tools/ is repository tooling, not part of the installed package
    sys.path.insert(0, str(ROOT))

from tools import slowest_tests, stages  # noqa: E402


def test_stages_stop_at_the_first_failure_with_its_exit_status_and_list_every_time(capsys):
    code = stages.main(["first=true", "second=exit 3", "third=echo never", "fourth="])
    out = capsys.readouterr().out
    assert code == 3
    table = out[out.index("stage times:"):].splitlines()
    assert table[1].split()[:3] == ["first", "0.0", "s"] and table[1].endswith("ok")
    assert "FAILED (exit status 3)" in table[2]
    assert "skipped (an earlier stage failed)" in table[3] and "never" not in out
    assert "not set up yet" in table[4] and table[5].split()[0] == "total"


def test_keep_going_runs_every_stage_and_still_fails():
    assert stages.main(["--keep-going", "a=false", "b=true"]) == 1
    assert stages.main(["a=true", "b=true"]) == 0


def test_a_stage_is_name_equals_command(capsys):
    with pytest.raises(SystemExit):
        stages.main(["no command"])
    assert "NAME=COMMAND" in capsys.readouterr().err


XUNIT1 = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_a" name="test_fast" file="tests/test_a.py" line="1" time="0.010"/>
<testcase classname="tests.test_a" name="test_slow[x]" file="tests/test_a.py" line="5" time="3.5"/>
<testcase classname="tests.test_b.TestThing" name="test_mid" file="tests/test_b.py" line="9" time="1.25">
<failure message="boom">boom</failure></testcase>
<testcase classname="tests.test_b" name="test_skipped" file="tests/test_b.py" line="12" time="0.001">
<skipped message="why">why</skipped></testcase>
</testsuite></testsuites>"""


def test_slowest_tests_from_a_junit_xml(tmp_path, capsys):
    xml = tmp_path / "junit.xml"
    xml.write_text(XUNIT1)
    cases = slowest_tests.read_durations(xml)
    assert ("tests/test_a.py::test_slow[x]", 3.5, "passed") in cases
    assert ("tests/test_b.py::test_mid", 1.25, "failed") in cases
    assert slowest_tests.main([str(xml), "--top", "2"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    first = lines.index("The 2 slowest tests:")
    assert "tests/test_a.py::test_slow[x]" in lines[first + 1] and "[failed]" in lines[first + 2]
    files = lines.index("The 2 slowest files:")
    assert "tests/test_a.py (2 tests)" in lines[files + 1] and "tests/test_b.py (2 tests)" in lines[files + 2]


def test_slowest_tests_reads_pytests_default_format_too(tmp_path):
    xml = tmp_path / "junit.xml"  # xunit2: no file attribute; the file comes from the class name
    xml.write_text(XUNIT1.replace(' file="tests/test_a.py"', "").replace(' file="tests/test_b.py"', ""))
    names = {test for test, _, _ in slowest_tests.read_durations(xml)}
    assert names == {"tests/test_a.py::test_fast", "tests/test_a.py::test_slow[x]", "tests/test_b.py::test_mid",
                     "tests/test_b.py::test_skipped"}


def test_slowest_tests_says_what_is_missing(tmp_path, capsys):
    assert slowest_tests.main([str(tmp_path / "none.xml")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    (tmp_path / "bad.xml").write_text("not xml")
    assert slowest_tests.main([str(tmp_path / "bad.xml")]) == 2


def test_a_skip_reason_said_by_a_stage_is_repeated_after_the_table(capfd):
    """`make test` still ends by saying "browser tests skipped: Chromium not installed" when it is."""
    said = "browser tests skipped: Chromium not installed (apt-get install chromium) (13 tests)"
    assert stages.main([f"browser=echo '{said}'; echo '13 skipped'", "nbval=echo 'all passed'"]) == 0
    out = capfd.readouterr().out
    table = out[out.index("stage times:"):]
    assert "all passed" not in table and table.count(said) == 1 and table.rstrip().endswith(said)


def test_the_unit_stage_keeps_each_test_module_on_one_worker():
    """Modules share a cluster of rank processes between their tests (a module-scoped fixture): split over
    both xdist workers, each worker would start its own, and the two would compete for the cores. The
    modules keep the order collected (tests/conftest.py puts those with a shared fixture first)."""
    unit = next(line for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("UNIT :="))
    assert "-n $(UNIT_WORKERS) --dist loadfile --no-loadscope-reorder" in unit, unit


def test_a_plus_stage_runs_beside_the_next_and_its_output_follows_that_stage(tmp_path, capfd):
    """Each stage waits for the other's file: they finish only if they run at the same time (bounded)."""
    d = tmp_path
    side = f"touch {d}/side; timeout 20 bash -c 'until [ -f {d}/main ]; do sleep 0.05; done' && echo side-done"
    main = f"touch {d}/main; timeout 20 bash -c 'until [ -f {d}/side ]; do sleep 0.05; done' && echo main-done"
    assert stages.main([f"+side={side}", f"main={main}", "after=echo after-done"]) == 0
    out = capfd.readouterr().out
    assert out.index("\nmain-done") < out.index("\nside-done") < out.index("\nafter-done")  # (not the commands)
    table = out[out.index("stage times:"):].splitlines()
    assert [row.split()[0] for row in table[1:4]] == ["side", "main", "after"]
    assert table[1].endswith("ok (beside main)") and table[2].endswith("ok")
    # Its own time: a quick side stage beside a slow one is not timed as the slow one.
    assert stages.main(["+quick=true", "slow=sleep 3"]) == 0
    table = capfd.readouterr().out.split("stage times:")[1].splitlines()
    assert float(table[1].split()[1]) < float(table[2].split()[1]) / 2, table
    # A side stage that had finished, well, before its partner failed is reported as it ended.
    assert stages.main(["+done=echo done-early", "late=sleep 1; exit 3"]) == 3
    table = capfd.readouterr().out.split("stage times:")[1].splitlines()
    assert table[1].endswith("ok (beside late)") and "FAILED (exit status 3)" in table[2], table


def test_two_plus_stages_in_a_row_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        stages.main(["+a=true", "+b=true", "c=true"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: two +stages in a row"), err
    with pytest.raises(ValueError, match="followed by"):
        stages.run_stages([stages.Stage("a", "true", True), stages.Stage("b", "true", True)])


def test_a_failing_stage_stops_the_one_beside_it_and_a_failing_side_stage_fails_the_run(tmp_path, capfd):
    pid_file = tmp_path / "pid"
    side = f"echo $$ > {pid_file}; sleep 60; echo never"
    assert stages.main([f"+side={side}", f"main=timeout 20 bash -c 'until [ -s {pid_file} ]; do sleep 0.05; "
                        "done'; exit 4", "after=echo never"]) == 4
    out = capfd.readouterr().out
    table = out[out.index("stage times:"):].splitlines()
    assert "stopped (main failed) (beside main)" in table[1] and "FAILED (exit status 4)" in table[2]
    assert "skipped" in table[3] and "\nnever" not in out
    with pytest.raises(ProcessLookupError):  # the side stage's shell is gone, not left behind
        os.kill(int(pid_file.read_text()), 0)
    said = "browser tests skipped: Chromium not installed (apt-get install chromium) (13 tests)"
    assert stages.main([f"+side=echo '{said}'; exit 5", "main=true", "after=echo never"]) == 5
    out = capfd.readouterr().out
    table = out[out.index("stage times:"):]
    assert "FAILED (exit status 5) (beside main)" in table and "skipped" in table
    assert table.rstrip().endswith(said)  # what it said is repeated after the table, as for any stage


def _gone(pid: int, seconds: float = 20) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("main_stage", ["echo $$ > {main}; exec sleep 60", "echo $$ > {main}"],
                         ids=["while both run", "while the side stage outlives the main one"])
def test_a_terminated_run_leaves_no_stage_running(tmp_path, main_stage):
    """SIGTERM (a cancelled CI job) ends the stage running and the one beside it, not only this process."""
    import subprocess
    import time

    side_pid, main_pid = tmp_path / "side", tmp_path / "main"
    run = subprocess.Popen([sys.executable, "-m", "tools.stages", f"+side=echo $$ > {side_pid}; sleep 60",
                            "main=" + main_stage.format(main=main_pid)], cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not all(p.exists() and p.read_text().strip() for p in (side_pid, main_pid)):
            assert time.monotonic() < deadline, "the stages did not start"
            time.sleep(0.05)
        time.sleep(0.2)  # the main stage of the second case has ended: this run waits for the side stage
        run.terminate()
        assert run.wait(30) == 128 + 15
    finally:
        run.kill()
    for pid_file in (side_pid, main_pid):
        assert _gone(int(pid_file.read_text())), f"the stage {pid_file.name} was left running"
