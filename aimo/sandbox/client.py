"""The sandbox's client side: `Sandbox` and `Session` (`Limits` and `ExecResult`: limits.py).

This module runs inside the lead's process (which may hold a large inference engine), so it
never forks: it starts the server (the folder ``_server/``, run by path) with ``subprocess``
and then only talks to sockets (``_channels.py``). See docs/sandbox.md for the design, the
isolation it gives and its limits.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import socket
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from aimo.sandbox import _protections
from aimo.sandbox._channels import Channel, Dead, Proc, Server, Unavailable
from aimo.sandbox._server.sbx_protocol import memory_cap_text
from aimo.sandbox.limits import (
    ERROR,
    GRACE_S,
    KILLED,
    MEMORY,
    OK,
    OUTPUT_LIMIT,
    STATUSES,
    TIMEOUT,
    ExecResult,
    Limits,
    SandboxError,
)

__all__ = [
    "ERROR",
    "GRACE_S",
    "KILLED",
    "MEMORY",
    "OK",
    "OUTPUT_LIMIT",
    "STATUSES",
    "TIMEOUT",
    "ExecResult",
    "Limits",
    "Sandbox",
    "SandboxError",
    "Session",
]

log = logging.getLogger("aimo.sandbox")

_logged = _protections._logged  # the texts logged once (a test reads it)


def _clean(text) -> str:
    """Valid UTF-8 text (lone surrogates replaced) whatever a session sent."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return text.encode("utf-8", "replace").decode("utf-8")


class Sandbox:
    """A pool of sandboxed Python sessions forked from one warm server.

    ``workers`` bounds how many blocks `run_round` runs at once. The server starts in the
    background when the Sandbox is created; the first call waits for it (about a second).
    """

    def __init__(
        self,
        limits: Limits | dict | None = None,
        workers: int = 2,
        *,
        spares: int | None = None,
        hide_paths=(),
        net_per_session: bool = True,
        namespaces: bool = True,
        drop_privileges: bool = True,
        python: str | None = None,
        start_timeout: float = 120.0,
    ):
        if limits is None:
            limits = Limits()
        elif isinstance(limits, dict):
            limits = Limits(**limits)
        self.limits = limits
        self.workers = max(1, int(workers))
        self._python = python or sys.executable
        self._opts = {
            "spares": self.workers if spares is None else max(0, int(spares)),
            "hide_paths": [os.path.abspath(p) for p in hide_paths],
            "net_per_session": bool(net_per_session),
            "scratch_mb": limits.scratch_mb,
            "namespaces": bool(namespaces),
            "drop_privileges": bool(drop_privileges),
            "pool_memory_mb": limits.pool_memory_mb,
        }
        self._start_timeout = start_timeout
        self._lock = threading.RLock()
        self._closed = False
        self._gen = 0
        self._server = None
        self._sessions = weakref.WeakSet()
        self._seeds = itertools.count(1)
        self._executor = None
        self._fatal = None  # a SandboxError from start-up, raised again by every call
        self._start_server()

    # ---- server management
    def _start_server(self):
        self._server = Server(self._python, self._opts)
        self._gen += 1

    def _ready(self) -> Server:
        with self._lock:
            if self._closed:
                raise RuntimeError("the Sandbox is closed")
            if self._fatal is not None:
                raise self._fatal
            srv = self._server
            if srv.dead:
                log.warning("the sandbox server died; starting a new one")
                srv.close()
                self._start_server()
                srv = self._server
            first = srv.info is None
            info = srv.wait_ready(self._start_timeout)
            if first:
                try:
                    _protections.report(info, self._opts["hide_paths"], self.limits.accept_missing)
                except SandboxError as e:
                    self._fatal = e
                    srv.close()
                    raise
            return srv

    @property
    def protections(self) -> dict:
        """Which protections are active, e.g. {"uid": True, "netns": True, ...}."""
        return dict(self._ready().info["protections"])

    @property
    def startup_s(self) -> float:
        """Seconds from creating the Sandbox to its server being ready."""
        return self._ready().info["client_startup_s"]

    def _open_process(self, limits: Limits, seed: int) -> Proc:
        for attempt in range(2):
            srv = self._ready()
            gen = self._gen
            try:
                reply, fds = srv.request(
                    {"op": "open", "limits": dataclasses.asdict(limits), "seed": seed}
                )
            except Dead:
                continue  # restart the server once
            if not reply.get("ok"):
                for fd in fds:
                    os.close(fd)
                raise Unavailable(reply.get("error", "cannot open a session"))
            sock = socket.socket(fileno=fds[0])
            pidfd = fds[1] if reply.get("pidfd") and len(fds) > 1 else None
            return Proc(Channel(sock, pidfd), reply["sid"], gen, reply.get("uid"))
        raise Unavailable("the sandbox server keeps dying")

    def _kill(self, proc: Proc, why: str, wait: bool = False, reply: bool = True) -> dict:
        """Kill a session process and everything of its uid; return how it ended.

        The server signals everything at once; `wait` makes it answer only when every process
        of the session is gone, `reply=False` not answer at all."""
        info = {
            "kind": "unknown",
            "code": 0,
            "desc": "the sandbox server restarted",
            "cpu_s": proc.cpu_total,
        }
        try:
            srv = self._server
            if proc.gen == self._gen and not srv.dead and not self._closed:
                answer, _ = srv.request(
                    {"op": "kill", "sid": proc.sid, "why": why, "wait": wait}, noreply=not reply
                )
                if answer and answer.get("ok"):
                    info = answer
        except Dead:
            pass
        finally:
            proc.chan.close()
        return info

    def _interrupt(self, proc: Proc):
        if proc.chan.pidfd is not None:
            try:
                signal.pidfd_send_signal(proc.chan.pidfd, signal.SIGINT)
                return
            except OSError:
                pass
        try:
            if proc.gen == self._gen:
                self._server.request({"op": "interrupt", "sid": proc.sid})
        except Dead:
            pass

    # ---- public API
    def session(self, limits: Limits | dict | None = None, seed: int | None = None) -> "Session":
        """A new stateful session (its process starts at the first block)."""
        if self._closed:
            raise RuntimeError("the Sandbox is closed")
        if limits is None:
            limits = self.limits
        elif isinstance(limits, dict):
            limits = Limits(**limits)
        s = Session(self, limits, next(self._seeds) if seed is None else int(seed))
        self._sessions.add(s)
        return s

    def run(self, code: str, limits: Limits | dict | None = None) -> ExecResult:
        """Run `code` in a fresh one-off session."""
        s = self.session(limits)
        try:
            return s.run(code)
        finally:
            s.close()

    def run_round(self, items) -> list[ExecResult]:
        """Run (session, code) pairs, up to `workers` at once; results in the input order.

        Blocks of one session run one after the other, in the given order."""
        items = list(items)
        for s, code in items:
            if not isinstance(s, Session) or s._sb is not self:
                raise TypeError("run_round takes (Session of this Sandbox, code) pairs")
            if not isinstance(code, str):
                raise TypeError("code must be a str")
            if s.closed:
                raise RuntimeError("run_round got a closed session")
        if not items:
            return []
        self._ready()
        groups = {}
        for i, (s, code) in enumerate(items):
            groups.setdefault(id(s), (s, []))[1].append((i, code))
        results = [None] * len(items)

        def chain(s, jobs):
            for i, code in jobs:
                results[i] = s.run(code)

        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="aimo-sandbox")
            ex = self._executor
        futures = [ex.submit(chain, s, jobs) for s, jobs in groups.values()]
        for f in futures:
            f.result()
        return results

    def close(self):
        """Stop the server and every session process under it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for s in list(self._sessions):
                s._abandon()
            if self._server is not None:
                self._server.close()
            ex, self._executor = self._executor, None
        if ex is not None:
            ex.shutdown(wait=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self):
        # wait for the server here: a protection missing where it should hold is an error now,
        # before the caller spends minutes on anything else
        self._ready()
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # never block here (a garbage collection may run while a lock is held): closing the
        # control socket makes the server kill everything and exit on its own
        try:
            if not self._closed and self._server is not None:
                self._closed = True
                self._server.ctl.close()
        except Exception:
            pass


class Session:
    """A notebook-like sequence of code blocks sharing one namespace.

    If a block's process dies (hard timeout, crash, os._exit ...), the next process silently
    re-runs this session's earlier blocks that finished with status ok or error (output
    discarded) to bring their variables back; the failed block's result says so.
    """

    def __init__(self, sandbox: Sandbox, limits: Limits, seed: int):
        self._sb = sandbox
        self.limits = limits
        self.seed = seed
        self._lock = threading.Lock()
        self._proc = None
        self._history = []  # (cell, code, wall_s, status) of blocks that finished ok/error in-process
        self._cells = 0
        self._ids = itertools.count(1)
        self._replay = None  # (message id, deadline, number of blocks)
        self._note = ""
        self.closed = False
        self.uid = None  # the uid its process runs as (None until it starts, or without root)

    def run(self, code: str) -> ExecResult:
        """Run one block. Raises only on a closed session, a non-str code, or SandboxError."""
        if not isinstance(code, str):
            raise TypeError("code must be a str")
        if self.closed or self._sb.closed:
            raise RuntimeError("the session is closed")
        with self._lock:
            started = time.monotonic()
            try:
                return self._run(code, started)
            except SandboxError:
                raise
            except Exception as e:  # never let a sandbox failure escape into the pipeline
                if self._sb.closed:
                    raise RuntimeError("the Sandbox was closed") from e
                log.exception("sandbox internal error")
                self._drop()
                return ExecResult(
                    KILLED, error=f"sandbox failure: {e!r}", wall_s=time.monotonic() - started
                )

    # ---- internals
    def _drop(self):
        if self._proc is not None:
            self._sb._kill(self._proc, "drop", reply=False)
            self._proc = None
        self._replay = None

    def _run(self, code, started):
        if self._proc is not None and self._proc.gen != self._sb._gen:
            self._proc.chan.close()
            self._proc = None
            self._replay = None
        try:
            if self._proc is None:
                self._start(replay=True)
            if self._replay is not None:
                self._finish_replay()
            if self._proc is None:
                self._start(replay=False)
        except Unavailable as e:
            return ExecResult(
                KILLED, error=f"sandbox unavailable: {e}", wall_s=time.monotonic() - started
            )
        self._cells += 1
        cell = self._cells
        res = self._execute(cell, code)
        if res.status in (OK, ERROR):
            self._history.append((cell, code, res.wall_s, res.status))
        if self._note:
            res.error = (self._note + ("\n" + res.error if res.error else "")).strip()
            self._note = ""
        return res

    def _start(self, replay):
        self._proc = self._sb._open_process(self.limits, self.seed)
        self.uid = self._proc.uid
        if replay and self._history:
            mid = next(self._ids)
            budget = 1.5 * sum(h[2] for h in self._history) + 1.0
            try:
                self._proc.chan.send(
                    {"op": "replay", "id": mid, "blocks": [[h[0], h[1]] for h in self._history]},
                    time.monotonic() + 5.0,
                )
            except (Dead, TimeoutError):
                pass  # noticed when waiting for the answer
            self._replay = (mid, time.monotonic() + budget, len(self._history))

    def _wait(self, mid, soft, hard):
        """('msg', message) | ('timeout', kill info) | ('dead', kill info)."""
        proc = self._proc
        interrupted = False
        while True:
            try:
                msg = proc.chan.recv(hard if interrupted else soft)
            except TimeoutError:
                if not interrupted:
                    interrupted = True
                    self._sb._interrupt(proc)
                    continue
                return "timeout", self._sb._kill(proc, "timeout")
            except Dead:
                return "dead", self._sb._kill(proc, "dead")
            if msg.get("id") == mid:
                return "msg", msg

    def _finish_replay(self):
        mid, deadline, n = self._replay
        self._replay = None
        how, msg = self._wait(mid, deadline, deadline + GRACE_S)
        if how == "msg":
            self._proc.cpu_total = float(msg.get("cpu_total") or 0.0)
            statuses = msg.get("statuses") or []
            if msg.get("status") != OK:
                k = max(len(statuses) - 1, 0)
                self._note = (
                    f"note: the session's state was only partly restored: re-running its earlier "
                    f"blocks stopped at block {k + 1} of {n} ({msg.get('status')}); variables "
                    f"defined from there on are missing."
                )
                self._history = self._history[:k]
            else:
                changed = sum(1 for h, s in zip(self._history, statuses) if s != h[3])
                if changed:
                    self._note = (
                        f"note: {changed} earlier block(s) behaved differently when re-run"
                        " to restore the session."
                    )
            return
        self._proc = None
        desc = msg.get("desc", "") if isinstance(msg, dict) else ""
        self._note = (
            "note: the session's state could not be restored (re-running its earlier blocks "
            f"{'took too long' if how == 'timeout' else 'failed: ' + desc}); it starts empty."
        )
        self._history = []

    def _restore_text(self):
        n = len(self._history)
        if n:
            return (
                f" The session's process was restarted: its {n} earlier block(s) that ran to the end"
                " are re-run silently (output discarded) to restore their variables."
            )
        return " The session's process was restarted with an empty namespace."

    def _execute(self, cell, code):
        proc, lim = self._proc, self.limits
        mid = next(self._ids)
        t0 = time.monotonic()
        soft = t0 + lim.wall_s
        hard = soft + GRACE_S
        try:
            proc.chan.send({"op": "run", "id": mid, "cell": cell, "code": code}, hard)
            how, msg = self._wait(mid, soft, hard)
        except TimeoutError:
            how, msg = "timeout", self._sb._kill(proc, "timeout")
        except Dead:
            how, msg = "dead", self._sb._kill(proc, "dead")
        wall = time.monotonic() - t0
        if how == "msg":
            proc.cpu_total = float(msg.get("cpu_total") or proc.cpu_total)
            proc.oom_kills = int(msg.get("oom_kills") or proc.oom_kills)
            status = msg.get("status")
            if status not in STATUSES:
                status = ERROR
            return ExecResult(
                status,
                _clean(msg.get("stdout")),
                _clean(msg.get("error")),
                float(msg.get("wall_s") or wall),
                float(msg.get("cpu_s") or 0.0),
            )
        # the process is gone: say why, restart it (re-running the history) right away
        cpu = max(float(msg.get("cpu_s") or 0.0) - proc.cpu_total, 0.0)
        desc = msg.get("desc", "the process ended")
        if int(msg.get("oom_kills") or 0) > proc.oom_kills:
            status = MEMORY
            error = memory_cap_text(
                dataclasses.asdict(lim),
                self._sb.limits.pool_memory_mb,
                "killed the session's process",
            )
        elif how == "timeout":
            status = TIMEOUT
            error = (
                f"wall time limit {lim.wall_s:g} s exceeded; the block did not stop when interrupted"
                f" and its process was killed."
            )
        elif msg.get("kind") == "signal" and msg.get("code") == signal.SIGXCPU:
            status = TIMEOUT
            error = f"CPU time limit {lim.cpu_s:g} s exceeded; the process was killed ({desc})."
        else:
            status = KILLED
            error = desc[:1].upper() + desc[1:] + "."
            if msg.get("kind") == "signal" and msg.get("code") == signal.SIGSEGV:
                error += " (a crash, e.g. a C stack overflow from very deep recursion)"
            elif msg.get("kind") == "exit":
                error += " (os._exit or a crash)"
        self._proc = None
        error += self._restore_text()
        if not self.closed and self._history:
            try:
                self._start(replay=True)
            except Unavailable:
                self._proc = None
        return ExecResult(status, "", error, wall, cpu)

    def _abandon(self):
        self.closed = True
        if self._proc is not None:
            self._proc.chan.close()
            self._proc = None

    def close(self, wait: bool = False):
        """Kill the session's process and everything it started; idempotent.

        The server does the killing at once; with ``wait=True`` this returns only after every
        process of the session is gone (a few milliseconds), otherwise right away."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            if self._proc is not None and not self._sb.closed:
                self._sb._kill(self._proc, "close", wait=wait, reply=wait)
            elif self._proc is not None:
                self._proc.chan.close()
            self._proc = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            proc = self._proc
            if not self.closed and proc is not None and not self._sb.closed:
                self.closed = True
                if proc.gen == self._sb._gen:
                    self._sb._server.graveyard.append(proc.sid)
                proc.chan.close()
        except Exception:
            pass
