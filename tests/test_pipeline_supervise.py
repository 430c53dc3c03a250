"""The supervisor with real child processes: restart after a crash, rate limit, clean stop."""
import os
import time
from pathlib import Path

import pytest

from conftest import wait_until
from fes_live.stream.supervise import Supervisor


@pytest.fixture
def supervisor():
    """Supervisors of a test; every child they started is stopped at teardown, whatever happened."""
    made = []

    def make(*args, **kw) -> Supervisor:
        made.append(Supervisor(*args, **kw))
        return made[-1]
    yield make
    for sup in made:
        sup.stop(list(sup.children), timeout_s=5)


def crash_once(marker: str, stop_event) -> int:
    """First run: crash hard. Later runs: work until asked to stop."""
    p = Path(marker)
    runs = int(p.read_text()) if p.exists() else 0
    p.write_text(str(runs + 1))
    if runs == 0:
        os._exit(3)
    stop_event.wait(30)
    return 0


def always_crash(marker: str, stop_event) -> int:
    raise RuntimeError("boom")


def cannot_run(marker: str, stop_event) -> int:
    from fes_live.stream.supervise import FATAL_EXIT
    return FATAL_EXIT  # e.g. a missing file: restarting cannot help


def bad_config(marker: str, stop_event) -> int:
    from fes_live.stream.config import ConfigError
    raise ConfigError("run.json: unknown key(s) ['fps_limit']")  # raised, not returned: still no restart


def finish(marker: str, stop_event) -> int:
    Path(marker).write_text("done")
    return 0


def test_restart_rate_limit_and_stop(tmp_path, supervisor):
    notes = []
    sup = supervisor(max_restarts=2, window_s=60, on_change=lambda *a: notes.append(a))
    sup.start("flaky", crash_once, str(tmp_path / "flaky"))
    sup.start("bad", always_crash, str(tmp_path / "bad"))
    sup.start("ok", finish, str(tmp_path / "ok"))
    sup.start("fatal", cannot_run, str(tmp_path / "fatal"))
    sup.start("config", bad_config, str(tmp_path / "config"))

    def settled():
        sup.poll()
        return sup.children["bad"].gave_up and sup.children["config"].gave_up and (tmp_path / "flaky").exists() \
            and (tmp_path / "flaky").read_text() == "2" and sup.children["flaky"].alive
    assert wait_until(settled, 20), notes
    assert ("flaky", "restarted", 3, 1) in notes
    assert [n for n in notes if n[0] == "bad"] == [("bad", "restarted", 1, 1), ("bad", "restarted", 1, 2),
                                                   ("bad", "gave_up", 1, 2)]
    assert [n for n in notes if n[0] == "fatal"] == [("fatal", "gave_up", 2, 0)]
    assert [n for n in notes if n[0] == "config"] == [("config", "gave_up", 2, 0)]
    assert sup.children["ok"].done and not sup.children["ok"].gave_up
    assert (tmp_path / "ok").read_text() == "done"
    assert sup.running() == ["flaky"]
    t0 = time.monotonic()
    sup.stop(["flaky"], timeout_s=10)
    assert time.monotonic() - t0 < 5
    assert sup.children["flaky"].process.exitcode == 0
    assert sup.running() == []
