"""Run roles as child processes and restart the ones that crash, with a rate limit.

Each role is a top-level function `role(cfg, stop_event) -> int` started with multiprocessing's spawn context (a
fresh interpreter: no forked ZeroMQ contexts or MediaPipe threads). Children ignore Ctrl-C: the parent decides
the shutdown order (ingests first, then the detector, so pending events are flushed) and signals it through each
child's stop event. A child that exits 0 is done (a file source ended), one that exits FATAL_EXIT (2) cannot run
(a missing file) and is given up at once; any other exit is a crash and restarts it, at most `max_restarts` times
within `window_s` seconds, with a growing delay; after that it is given up. An exception that a restart cannot
fix (a bad config, an unreadable source or engine, a port in use) is logged as one line, without a traceback, and
counts as FATAL_EXIT.

Children die with their parent: on Linux each child asks the kernel for SIGTERM when the parent dies
(`PR_SET_PDEATHSIG`), and everywhere a watcher thread notices that the parent is gone (SIGKILL of `fes-live`
leaves no detector holding the ports) and stops the child, then exits it hard if stopping takes too long.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import importlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_MP = mp.get_context("spawn")

FATAL_EXIT = 2  # a role exits with this when restarting cannot help (missing file, no face model)
NOTES_TO = "detector"  # the child that publishes the notes: after it restarts, the recent notes are sent again
NOTES_KEPT = 64  # notes kept for sending again

# on_change(child name, "restarted" | "gave_up", exit code, restarts so far); `Supervisor.note_id` is the id of the
# note being sent (the same when it is sent again), so the receiver can publish each note once
OnChange = Callable[[str, str, "int | None", int], None]


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ORPHAN_GRACE_S = 10.0  # a child whose parent died gets this long to stop cleanly, then exits hard


def die_with_parent(parent_pid: int, stop_event) -> None:
    """Stop this process when `parent_pid` dies: PR_SET_PDEATHSIG on Linux, plus a watcher thread everywhere."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except OSError:
            pass  # the watcher below still works

    hard_stop = hasattr(signal, "alarm")
    if hard_stop:  # SIGALRM's default action ends the process in the kernel, whatever Python is blocked in
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        logging.getLogger(__name__).warning("parent %d is gone: stopping", parent_pid)
        if hard_stop:  # a shutdown stuck in C (a ZeroMQ context, a thread join at exit) cannot outlive this
            signal.alarm(int(ORPHAN_GRACE_S) + 1)
        stop_event.set()
        time.sleep(ORPHAN_GRACE_S)
        os._exit(1)

    if os.getppid() != parent_pid:  # died before we got here
        stop_event.set()
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def is_user_error(exc: BaseException) -> bool:
    """An error a restart cannot fix: bad config, unreadable source or engine, port in use, missing file.

    The classes are looked up only in modules already loaded: an exception of a module that was never imported
    cannot have been raised (and the supervisor never pays for importing torch or OpenCV)."""
    fatal: list[type] = [FileNotFoundError, PermissionError, IsADirectoryError]
    for module, name in (("fes_live.stream.config", "ConfigError"), ("fes_live.stream.sources", "SourceError"),
                         ("fes_live.stream.engine", "EngineError")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None:
            fatal.append(cls)
    zmq = sys.modules.get("zmq")
    if zmq is not None and isinstance(exc, zmq.ZMQError) and exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL,
                                                                           errno.EACCES):
        return True
    return isinstance(exc, tuple(fatal))


Target = Callable | str  # a role's function, or "module:function" to import in the child only


def _child_main(target: Target, cfg: Any, stop_event, name: str, log_level: int, parent_pid: int) -> None:
    """Entry of every child process: die with the parent, signals -> stop event, logging, the role's exit code."""
    die_with_parent(parent_pid, stop_event)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    logging.basicConfig(level=log_level, format=f"%(asctime)s {name} %(name)s %(levelname)s %(message)s")
    try:
        if isinstance(target, str):  # the supervisor never imports what only the role needs (torch: ~1.5 s of CPU)
            module, _, function = target.partition(":")
            target = getattr(importlib.import_module(module), function)
        code = target(cfg, stop_event)
    except Exception as e:
        if is_user_error(e):
            logging.getLogger(name).error("%s cannot run: %s", name, e)
            code = FATAL_EXIT
        else:
            logging.getLogger(name).exception("role %s crashed", name)
            code = 1
    raise SystemExit(int(code or 0))


@dataclass
class Child:
    name: str
    target: Target
    cfg: Any
    process: Any = None
    stop_event: Any = None
    restarts: deque = field(default_factory=deque)  # times of recent restarts
    restart_at: float | None = None  # a pending restart waits until then
    done: bool = False  # exited 0, or given up
    gave_up: bool = False
    last_exitcode: int | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()


class Supervisor:
    def __init__(self, max_restarts: int = 5, window_s: float = 60.0, on_change: OnChange | None = None,
                 notes_to: str = NOTES_TO):
        """`notes_to`: the child that publishes the notes (a pool of detector workers names the one that owns the
        pipeline stream)."""
        self.max_restarts, self.window_s = max_restarts, window_s
        self.notes_to = notes_to
        self.on_change = on_change
        self.children: dict[str, Child] = {}
        self.notes: deque[tuple[str, str, str, int | None, int]] = deque(maxlen=NOTES_KEPT)  # id, child, status, ..
        self.note_id = ""  # id of the note on_change is being called for
        self._token = f"{os.getpid()}-{time.time_ns() % 10**9}"  # note ids: unique per supervisor run
        self._count = 0

    def start(self, name: str, target: Target, cfg: Any) -> Child:
        child = self.children.get(name) or Child(name, target, cfg)
        self.children[name] = child
        child.stop_event = _MP.Event()
        child.process = _MP.Process(target=_child_main, name=name, daemon=False,
                                    args=(target, cfg, child.stop_event, name, logging.getLogger().level, os.getpid()))
        child.process.start()
        child.restart_at = None
        log.info("started %s (pid %d)", name, child.process.pid)
        return child

    def poll(self) -> None:
        """Reap exited children; restart crashed ones (rate-limited) and report it through `on_change`."""
        now = time.monotonic()
        for child in self.children.values():
            if child.done:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self.start(child.name, child.target, child.cfg)
                    earlier = list(self.notes)
                    self._notify(child, "restarted", child.last_exitcode)
                    if child.name == self.notes_to:  # notes it had received but not published died with it
                        for note in earlier:
                            self._send(*note)
                continue
            if child.alive:
                continue
            code = child.process.exitcode
            child.last_exitcode = code
            if code == 0 or child.stop_event.is_set():
                log.info("%s exited (code %s)", child.name, code)
                child.done = True
                continue
            if code == FATAL_EXIT:
                log.error("%s exited with code %d (bad configuration or input, see above): not restarting",
                          child.name, code)
                child.done = child.gave_up = True
                self._notify(child, "gave_up", code)
                continue
            while child.restarts and now - child.restarts[0] > self.window_s:
                child.restarts.popleft()
            if len(child.restarts) >= self.max_restarts:
                log.error("%s crashed (code %s) %d times within %.0f s: giving up", child.name, code,
                          len(child.restarts) + 1, self.window_s)
                child.done = child.gave_up = True
                self._notify(child, "gave_up", code)
                continue
            child.restarts.append(now)
            delay = 0.5 * len(child.restarts)
            log.warning("%s crashed (code %s); restarting in %.1f s", child.name, code, delay)
            child.restart_at = now + delay

    def _notify(self, child: Child, status: str, code: int | None) -> None:
        self._count += 1
        note = (f"{self._token}-{self._count}", child.name, status, code, len(child.restarts))
        self.notes.append(note)
        self._send(*note)

    def _send(self, note_id: str, name: str, status: str, code: int | None, restarts: int) -> None:
        if self.on_change is not None:
            self.note_id = note_id
            try:
                self.on_change(name, status, code, restarts)
            except Exception:  # a failed note must not take the supervisor down
                log.exception("on_change for %s failed", name)

    def running(self, names: list[str] | None = None) -> list[str]:
        """Children (of `names`) that are alive or about to be restarted."""
        return [c.name for c in self.children.values() if (names is None or c.name in names)
                and not c.done and (c.alive or c.restart_at is not None)]

    def stop(self, names: list[str], timeout_s: float = 10.0) -> None:
        """Ask `names` to stop, wait up to `timeout_s`, then terminate and finally kill what is left. Names never
        started (the run ended before their turn, e.g. the detector never came up) are skipped."""
        names = [n for n in names if n in self.children]
        for name in names:
            child = self.children[name]
            child.restart_at = None
            if child.stop_event is not None:
                child.stop_event.set()
        deadline = time.monotonic() + timeout_s
        for name in names:
            proc = self.children[name].process
            if proc is not None:
                proc.join(max(0.0, deadline - time.monotonic()))
        for name in names:
            child = self.children[name]
            proc = child.process
            if proc is not None and proc.is_alive():
                log.warning("%s did not stop within %.0f s: terminating", name, timeout_s)
                proc.terminate()
                proc.join(3.0)
                if proc.is_alive():
                    proc.kill()
                    proc.join(3.0)
            child.done = True
