"""The worker supervisor with real processes: the supervisor runs in a child process (so the
signals are real) and its workers are small Python scripts, not the bridge. Each worker writes
``<index>-<pid>.json`` (its BRIDGE_* environment) when it is up and ``<index>-<pid>.stopped``
(the signal's name) when it is told to stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.cluster.supervisor import (
    GAVE_UP,
    cgroup_cpu_limit,
    describe_exit,
    usable_cores,
    worker_command,
)
from bridge.stopping import SAME_STOP_WITHIN

WORKER = r"""
import json, os, signal, sys, time
from pathlib import Path
out, mode = Path(sys.argv[1]), sys.argv[2]
env = {k: v for k, v in os.environ.items() if k.startswith("BRIDGE_") or k == "EXTRA"}
name = f"{env['BRIDGE_WORKER_INDEX']}-{os.getpid()}"

def note(suffix, text):
    tmp = out / f"{name}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / f"{name}.{suffix}")

if mode == "crash":
    note("json", json.dumps(env))
    print("webrtc-bridge: configuration error: BRIDGE_X: broken on purpose", file=sys.stderr)
    sys.exit(2)

def stop(signum, frame):
    note("stopped", signal.Signals(signum).name)
    if mode == "drain":
        time.sleep(0.2)  # a call or two hanging up
        sys.exit(0)
    # "stubborn": ignores the request and keeps running

signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
note("json", json.dumps(env))
while True:
    time.sleep(0.05)
"""

SUPERVISOR = r"""
import json, logging, os, signal, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from bridge.cluster.supervisor import Supervisor
cfg = json.loads(sys.argv[1])
supervisor = Supervisor(
    len(cfg["modes"]),
    lambda i: [sys.executable, "-c", cfg["worker"], cfg["dir"], cfg["modes"][i]],
    lambda i: {"EXTRA": f"x{i}"},
    drain_timeout=cfg["drain_timeout"],
    start_window=cfg["start_window"],
)
code = supervisor.run()
if cfg["repeat_after_run"]:  # the same stop, passed on, arriving after the run's end
    os.kill(os.getpid(), signal.SIGTERM)
sys.exit(code)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's reaper may be slow to collect it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class Run:
    """A supervisor process over workers of the given modes (drain, stubborn, crash)."""

    def __init__(
        self,
        tmp: Path,
        modes: list[str],
        drain_timeout: float = 30.0,
        repeat_after_run: bool = False,
    ) -> None:
        self.dir = tmp / "workers"
        self.dir.mkdir(parents=True)
        self.log = tmp / "supervisor.log"
        cfg = {"modes": modes, "worker": WORKER, "dir": str(self.dir)}
        cfg["drain_timeout"] = drain_timeout
        cfg["repeat_after_run"] = repeat_after_run
        # Generous: a crash at start on a loaded machine must still count as one.
        cfg["start_window"] = 10.0
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SUPERVISOR, json.dumps(cfg)],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def workers(self) -> dict[int, dict[str, str]]:
        """Every worker that came up, by pid: its BRIDGE_* environment."""
        return {
            int(f.stem.split("-")[1]): json.loads(f.read_text()) for f in self.dir.glob("*.json")
        }

    def pids(self, index: int) -> list[int]:
        return sorted(
            (p for p, env in self.workers().items() if env["BRIDGE_WORKER_INDEX"] == str(index)),
            key=lambda p: (self.dir / f"{index}-{p}.json").stat().st_mtime_ns,
        )

    def stopped(self) -> dict[int, str]:
        """The workers told to stop, by pid: the signal they got."""
        return {int(f.stem.split("-")[1]): f.read_text() for f in self.dir.glob("*.stopped")}

    def text(self) -> str:
        return self.log.read_text()

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := check():
                return result
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; supervisor log:\n{self.text()}")

    def exit_code(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor still running:\n{self.text()}") from None

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.workers():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def start(modes: list[str], **kw: Any) -> Run:
        run = Run(tmp_path / str(len(runs)), modes, **kw)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.cleanup()


def test_worker_env_carries_its_index_the_total_and_the_extra_env(start) -> None:
    run = start(["drain"] * 3)
    workers = run.wait_for("three workers", lambda: len(run.workers()) == 3 and run.workers())
    envs = sorted(workers.values(), key=lambda e: e["BRIDGE_WORKER_INDEX"])
    assert [(e["BRIDGE_WORKER_INDEX"], e["BRIDGE_WORKERS_TOTAL"], e["EXTRA"]) for e in envs] == [
        ("0", "3", "x0"),
        ("1", "3", "x1"),
        ("2", "3", "x2"),
    ]
    run.proc.terminate()
    assert run.exit_code() == 0, run.text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_is_forwarded_and_drained_workers_exit_0(start, sig) -> None:
    run = start(["drain", "drain"])
    run.wait_for("two workers", lambda: len(run.workers()) == 2)
    pids = set(run.workers())
    run.proc.send_signal(sig)
    assert run.exit_code() == 0, run.text()
    # Each worker was told once, with the signal the supervisor got, and is gone.
    assert run.stopped() == {pid: sig.name for pid in pids}
    assert not any(alive(pid) for pid in pids)
    assert "WARNING" not in run.text() and "all workers stopped" in run.text()


def test_the_same_stop_passed_on_twice_still_drains(start) -> None:
    """``make`` and systemd pass the stop on to the supervisor a second time within
    milliseconds: the workers drain as for one (a second stop signal would kill them)."""
    run = start(["drain", "drain"])
    run.wait_for("two workers", lambda: len(run.workers()) == 2)
    pids = set(run.workers())
    run.proc.send_signal(signal.SIGTERM)
    time.sleep(0.002)
    run.proc.send_signal(signal.SIGTERM)
    assert run.exit_code() == 0, run.text()
    assert run.stopped() == {pid: "SIGTERM" for pid in pids}
    assert "killing" not in run.text() and "all workers stopped" in run.text()


def test_a_repeat_after_the_supervision_ends_does_not_kill_the_stop(start) -> None:
    """A stop passed on again can land after the workers drained, when the supervisor put
    the default handlers back: that killed a clean stop with -15. Once stopping, the stop
    signals stay ignored to the end."""
    run = start(["drain"], repeat_after_run=True)
    run.wait_for("a worker", lambda: len(run.workers()) == 1)
    run.proc.send_signal(signal.SIGTERM)
    assert run.exit_code() == 0, run.text()
    assert "all workers stopped" in run.text()


def test_a_second_stop_signal_later_kills_at_once(start) -> None:
    run = start(["drain", "stubborn"], drain_timeout=30.0)
    run.wait_for("two workers", lambda: len(run.workers()) == 2)
    (stubborn,) = run.pids(1)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for("the stop passed on", lambda: stubborn in run.stopped())
    time.sleep(SAME_STOP_WITHIN + 0.1)
    assert alive(stubborn)  # still draining, as it may for 30 s
    run.proc.send_signal(signal.SIGINT)
    assert run.exit_code() == 1, run.text()  # long before the 30 s
    assert f"worker 1 (pid {stubborn}): a second stop signal, killing it" in run.text()
    assert not alive(stubborn)


def test_a_killed_worker_is_restarted_with_backoff(start) -> None:
    run = start(["drain", "drain"])
    run.wait_for("two workers", lambda: len(run.workers()) == 2)
    (first,) = run.pids(0)
    (other,) = run.pids(1)
    os.kill(first, signal.SIGKILL)
    second = run.wait_for("worker 0 restarted", lambda: run.pids(0)[1:2])[0]
    assert second != first and not alive(first)
    log = run.text()
    assert f"worker 0 (pid {first}) exited unexpectedly" in log
    assert "killed by SIGKILL; restarting in 0.5 s" in log
    # A second death in a row waits twice as long.
    os.kill(second, signal.SIGKILL)
    run.wait_for("worker 0 restarted again", lambda: len(run.pids(0)) == 3)
    assert f"worker 0 (pid {second}) exited unexpectedly" in run.text()
    assert "killed by SIGKILL; restarting in 1.0 s" in run.text()
    # The other worker was never touched; the new one is the one that gets the stop signal.
    assert run.pids(1) == [other] and alive(other)
    run.proc.terminate()
    assert run.exit_code() == 0, run.text()
    assert set(run.stopped()) == {run.pids(0)[-1], other}


def test_a_worker_ignoring_sigterm_is_killed_after_the_drain_timeout(start) -> None:
    run = start(["drain", "stubborn"], drain_timeout=1.0)
    run.wait_for("two workers", lambda: len(run.workers()) == 2)
    (drains,) = run.pids(0)
    (stubborn,) = run.pids(1)
    run.proc.terminate()
    assert run.exit_code() == 1, run.text()
    assert set(run.stopped()) == {drains, stubborn}  # both were asked
    assert not alive(stubborn)
    log = run.text()
    assert f"worker 1 (pid {stubborn}): still running 1 s after SIGTERM, killing it" in log
    assert "stopped: killed by SIGKILL" in log and "not all cleanly" in log


def test_a_worker_crashing_at_start_three_times_stops_the_supervisor(start) -> None:
    run = start(["drain", "crash"])
    assert run.exit_code() == GAVE_UP, run.text()
    log = run.text()
    assert len(run.pids(1)) == 3
    assert log.count("broken on purpose") == 3  # the worker's own error, each time
    assert "worker 1 failed 3 times in a row within 10 s of starting (last: exit code 2)" in log
    assert "giving up" in log
    # The healthy worker was drained, not left behind.
    (healthy,) = run.pids(0)
    assert run.stopped() == {healthy: "SIGTERM"} and not alive(healthy)


def test_workers_stop_when_the_supervisor_is_killed(start) -> None:
    run = start(["drain", "drain"])
    run.wait_for("two workers", lambda: len(run.workers()) == 2)
    run.proc.kill()
    run.proc.wait()
    # Linux's parent-death signal: no worker is left holding the public port.
    run.wait_for("workers gone", lambda: not any(alive(p) for p in run.workers()))
    assert set(run.stopped().values()) == {"SIGTERM"}


def test_worker_command_and_cores(tmp_path: Path) -> None:
    assert worker_command(["--port", "9000"]) == [sys.executable, "-m", "bridge", "--port", "9000"]
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    for text, expected in [
        ("max 100000\n", None),
        ("200000 100000\n", 2),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("", None),
    ]:
        cpu_max.write_text(text)
        assert cgroup_cpu_limit(cpu_max) == expected, text
    assert cgroup_cpu_limit(tmp_path / "missing") is None
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
