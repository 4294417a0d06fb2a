"""The sandbox's client side: `Limits`, `ExecResult`, `Sandbox` and `Session`.

This module runs inside the lead's process (which may hold a large inference engine), so it
never forks: it starts the server (``_server.py``) with ``subprocess`` and then only talks to
sockets. See docs/sandbox.md for the design, the isolation it gives and its limits.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from . import _server as _srv

log = logging.getLogger("aimo.sandbox")

OK, ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, KILLED = (
    _srv.OK, _srv.ERROR, _srv.TIMEOUT, _srv.MEMORY, _srv.OUTPUT_LIMIT, _srv.KILLED)
STATUSES = (OK, ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, KILLED)

GRACE_S = 0.5            # after the soft wall-time interrupt, how long before the process is killed
_REQUEST_TIMEOUT_S = 15.0
_SERVER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_server.py")
_SERVER_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8",
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
    "MPLBACKEND": "Agg",
}
_PROTECTION_NAMES = {
    "uid": "separate unprivileged uids (code could write the run's files, signal other sessions)",
    "netns": "network isolation",
    "pidns": "a pid namespace (if the server is killed, processes that called setsid() may survive)",
    "private_tmp": "a private /tmp per session",
    "memory_cgroup": "a memory cap per session and for the pool (a session may hold processes x memory_mb,"
                     " and the kernel's OOM killer may pick the inference engine)",
}
_EXPECTED_NAMES = dict(_PROTECTION_NAMES, mountns="a mount namespace", ipcns="an ipc namespace",
                       proc="a private /proc", netns_per_session="a network namespace per session",
                       hidden_paths="hidden paths (hide_paths)")
_logged = set()


def _log_once(level, text):
    if text not in _logged:
        _logged.add(text)
        log.log(level, text)


@dataclasses.dataclass
class Limits:
    """Per-block limits. Every field has a default; ``Limits(**config_dict)`` works.

    ``pool_memory_mb`` and ``accept_missing`` concern the whole pool: they are read from the
    Sandbox's limits (a session's own limits cannot change them)."""

    wall_s: float = 10.0        # wall time per block (soft interrupt, then kill GRACE_S later)
    cpu_s: float = 10.0         # CPU time per block (RLIMIT_CPU, whole seconds)
    memory_mb: int = 2048       # address space per process (RLIMIT_AS)
    processes: int = 16         # processes and threads of the session's uid (RLIMIT_NPROC)
    open_files: int = 64        # RLIMIT_NOFILE
    file_size_mb: int = 16      # largest file a block may write (RLIMIT_FSIZE)
    output_chars: int = 2000    # characters of stdout returned (head and tail kept)
    max_output_mb: float = 8    # a block printing more than this is stopped ("output_limit")
    scratch_mb: int = 256       # size of the private /tmp (tmpfs) of a session
    session_memory_mb: int = 2048   # memory of all processes of a session together (memory cgroup)
    pool_memory_mb: int = 4096      # memory of the whole pool: server, spares and sessions (cgroup)
    accept_missing: bool = False    # run even when a protection that should hold here does not

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise TypeError(f"Limits.{f.name} must be true or false, not {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"Limits.{f.name} must be a number, not {value!r}")
            value = float(value) if f.type in ("float", float) else int(value)
            if value < 0 or (value == 0 and f.name != "output_chars"):
                raise ValueError(f"Limits.{f.name} must be positive, not {value!r}")
            setattr(self, f.name, value)


@dataclasses.dataclass
class ExecResult:
    """What one code block did."""

    status: str                 # one of STATUSES
    stdout: str = ""            # captured stdout+stderr, cut to output_chars (head and tail kept)
    error: str = ""             # traceback tail, or why the block was stopped
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def output(self) -> str:
        """The text to show the model: stdout, then the error if any."""
        if not self.error:
            return self.stdout
        if not self.stdout:
            return self.error
        return self.stdout + ("" if self.stdout.endswith("\n") else "\n") + self.error


def _wait_fd(fd, timeout, events=select.POLLIN) -> bool:
    """Whether `fd` gets ready within `timeout` seconds (poll: fds above 1024 are fine)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0, int(timeout * 1000 + 0.999))))


def _clean(text) -> str:
    """Valid UTF-8 text (lone surrogates replaced) whatever a session sent."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return text.encode("utf-8", "replace").decode("utf-8")


class SandboxError(RuntimeError):
    """The sandbox cannot work here (its server does not start). Not caused by the code run."""


class _Dead(Exception):
    """The session process is gone (or spoke garbage)."""


class _Unavailable(Exception):
    """No session process could be started."""


class _Channel:
    """The client end of one session's stream socket, plus a pidfd of its process."""

    def __init__(self, sock, pidfd):
        self.sock = sock
        self.pidfd = pidfd
        self.buf = bytearray()
        sock.setblocking(False)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        if self.pidfd is not None:
            try:
                os.close(self.pidfd)
            except OSError:
                pass
            self.pidfd = None

    def send(self, obj, deadline):
        data = json.dumps(obj).encode()
        view = memoryview(_srv.HDR.pack(len(data)) + data)
        while view:
            try:
                view = view[self.sock.send(view):]
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                raise _Dead(str(e)) from None
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            _wait_fd(self.sock.fileno(), wait, select.POLLOUT)

    def _parse(self):
        if len(self.buf) < 4:
            return None
        (n,) = _srv.HDR.unpack_from(self.buf)
        if n > _srv.MAX_MSG:
            raise _Dead("protocol error (oversized message)")
        if len(self.buf) < 4 + n:
            return None
        raw = bytes(self.buf[4:4 + n])
        del self.buf[:4 + n]
        try:
            msg = json.loads(raw)
        except ValueError:
            raise _Dead("protocol error (bad message)") from None
        if not isinstance(msg, dict):
            raise _Dead("protocol error (bad message)")
        return msg

    def _drain(self):
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return False
        except OSError as e:
            raise _Dead(str(e)) from None
        if not data:
            raise _Dead("end of stream")
        self.buf += data
        return True

    def recv(self, deadline):
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
        while True:
            msg = self._parse()
            if msg is not None:
                return msg
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            events = poller.poll(max(1, int(wait * 1000 + 0.999)))
            fds = {fd for fd, _ in events}
            if self.sock.fileno() in fds:
                self._drain()
            elif self.pidfd is not None and self.pidfd in fds:
                # the process has exited: whatever it sent is already queued
                if not self._drain() and self._parse() is None:
                    raise _Dead("process exited")


class _Proc:
    """A live session process as the client knows it."""

    def __init__(self, chan, sid, gen, uid):
        self.chan, self.sid, self.gen, self.uid = chan, sid, gen, uid
        self.cpu_total = 0.0
        self.oom_kills = 0          # OOM kills in its cgroup known from its last answer


class _Server:
    """The fork server's subprocess and its control channel."""

    def __init__(self, python, opts):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                [python, "-s", "-P", _SERVER_PATH, str(child.fileno())],
                pass_fds=[child.fileno()], env=dict(_SERVER_ENV), cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, start_new_session=True)
        finally:
            child.close()
        self.ctl = parent
        try:
            parent.send(json.dumps(opts).encode())
        except OSError:
            pass                                # noticed by wait_ready
        self.lock = threading.Lock()
        self.info = None
        self.dead = False
        self.rids = itertools.count(1)
        self.graveyard = collections.deque()    # sids of sessions garbage-collected unclosed

    def wait_ready(self, timeout):
        with self.lock:
            if self.info is not None:
                return self.info
            deadline = time.monotonic() + timeout
            while True:
                wait = deadline - time.monotonic()
                if wait <= 0 or self.proc.poll() is not None:
                    self.dead = True
                    raise SandboxError("the sandbox server did not start (see its stderr above)")
                if _wait_fd(self.ctl.fileno(), min(wait, 0.5)):
                    try:
                        data = self.ctl.recv(1 << 20)
                    except OSError:
                        data = b""
                    if not data:
                        self.dead = True
                        raise SandboxError("the sandbox server exited during start-up (see its stderr)")
                    self.info = json.loads(data)
                    self.info["client_startup_s"] = time.monotonic() - self.started
                    return self.info

    def request(self, msg, noreply=False, timeout=_REQUEST_TIMEOUT_S):
        """Send `msg`; return (reply, fds). Raises _Dead when the server is gone."""
        with self.lock:
            if self.dead:
                raise _Dead("server gone")
            while self.graveyard:              # kills queued by __del__ (which must not lock)
                sid = self.graveyard.popleft()
                try:
                    self.ctl.send(json.dumps({"op": "kill", "sid": sid, "wait": False,
                                              "noreply": True}).encode())
                except OSError:
                    pass
            rid = next(self.rids)
            msg = dict(msg, rid=rid, noreply=noreply)
            try:
                self.ctl.send(json.dumps(msg).encode())
            except OSError as e:
                self.dead = True
                raise _Dead(f"server gone ({e})") from None
            if noreply:
                return None, []
            deadline = time.monotonic() + timeout
            while True:
                wait = deadline - time.monotonic()
                if wait <= 0 or not _wait_fd(self.ctl.fileno(), wait):
                    self.dead = True
                    raise _Dead("the sandbox server stopped answering")
                try:
                    data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 20, 4)
                except OSError as e:
                    self.dead = True
                    raise _Dead(f"server gone ({e})") from None
                if not data:
                    self.dead = True
                    raise _Dead("the sandbox server exited")
                reply = json.loads(data)
                if reply.get("rid") == rid:
                    return reply, fds
                for fd in fds:              # a late answer to an abandoned request
                    os.close(fd)

    def close(self):
        if not self.dead:
            try:
                self.request({"op": "shutdown"}, timeout=10.0)
            except (_Dead, ValueError):
                pass
        self.dead = True
        try:
            self.ctl.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        base = (self.info or {}).get("scratch_base")
        if base and os.path.isdir(base):     # the server was killed before it could clean up
            import shutil
            shutil.rmtree(base, ignore_errors=True)
        cg = (self.info or {}).get("cgroup")
        if cg and os.path.isdir(cg):
            from . import _cgroup
            _cgroup.Pool(0, cg).remove_all()


class Sandbox:
    """A pool of sandboxed Python sessions forked from one warm server.

    ``workers`` bounds how many blocks `run_round` runs at once. The server starts in the
    background when the Sandbox is created; the first call waits for it (about a second).
    """

    def __init__(self, limits: Limits | dict | None = None, workers: int = 2, *, spares: int | None = None,
                 hide_paths=(), net_per_session: bool = True, namespaces: bool = True,
                 drop_privileges: bool = True, python: str | None = None, start_timeout: float = 120.0):
        if limits is None:
            limits = Limits()
        elif isinstance(limits, dict):
            limits = Limits(**limits)
        self.limits = limits
        self.workers = max(1, int(workers))
        self._python = python or sys.executable
        self._opts = {"spares": self.workers if spares is None else max(0, int(spares)),
                      "hide_paths": [os.path.abspath(p) for p in hide_paths],
                      "net_per_session": bool(net_per_session), "scratch_mb": limits.scratch_mb,
                      "namespaces": bool(namespaces), "drop_privileges": bool(drop_privileges),
                      "pool_memory_mb": limits.pool_memory_mb}
        self._start_timeout = start_timeout
        self._lock = threading.RLock()
        self._closed = False
        self._gen = 0
        self._server = None
        self._sessions = weakref.WeakSet()
        self._seeds = itertools.count(1)
        self._executor = None
        self._fatal = None          # a SandboxError from start-up, raised again by every call
        self._start_server()

    # ---- server management
    def _start_server(self):
        self._server = _Server(self._python, self._opts)
        self._gen += 1

    def _ready(self) -> _Server:
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
                    self._report(info)
                except SandboxError as e:
                    self._fatal = e
                    srv.close()
                    raise
            return srv

    def _report(self, info):
        """Say once which protections are missing and why; raise SandboxError instead where the
        machine offers what they need (root, namespaces) and the limits do not accept_missing."""
        prot, notes = info["protections"], info.get("notes", {})
        absent = [k for k in _PROTECTION_NAMES if not prot.get(k)]
        absent += [k for k in info.get("expected", []) if not prot.get(k) and k not in absent]
        hide = [p for p in self._opts["hide_paths"] if os.path.exists(p)]
        if set(hide) - set(prot.get("hidden_paths") or []):
            absent.append("hidden_paths")
        texts = []
        for key in absent:
            why = self._why(key, notes)
            texts.append(f"{_EXPECTED_NAMES[key]} ({why})" if why else _EXPECTED_NAMES[key])
        should = [t for k, t in zip(absent, texts) if k in info.get("expected", []) or k == "hidden_paths"]
        if should and info.get("strict") and not self.limits.accept_missing:
            raise SandboxError(
                "sandbox protections missing although this machine offers what they need (root, "
                f"namespaces): {'; '.join(should)}. Fix the cause, or set sandbox.accept_missing: true "
                "(Limits(accept_missing=True)) to run without them (see docs/sandbox.md)")
        if texts:
            _log_once(logging.WARNING, "sandbox running without: " + "; ".join(texts))
        log.debug("sandbox server ready in %.2f s: %s", info.get("client_startup_s", 0), prot)

    @staticmethod
    def _why(key, notes):
        alias = {"private_tmp": "mountns", "netns_per_session": "netns"}.get(key, key)
        if key == "hidden_paths":
            return "; ".join(v if k == "hide_paths" else f"{k[5:]}: {v}"
                             for k, v in notes.items() if k.startswith("hide")) or None
        return notes.get(key) or notes.get(f"session {key}") or notes.get(alias) \
            or notes.get(f"session {alias}") or (notes.get("expose") if key == "uid" else None)

    @property
    def protections(self) -> dict:
        """Which protections are active, e.g. {"uid": True, "netns": True, ...}."""
        return dict(self._ready().info["protections"])

    @property
    def startup_s(self) -> float:
        """Seconds from creating the Sandbox to its server being ready."""
        return self._ready().info["client_startup_s"]

    def _open_process(self, limits: Limits, seed: int) -> _Proc:
        for attempt in range(2):
            srv = self._ready()
            gen = self._gen
            try:
                reply, fds = srv.request({"op": "open", "limits": dataclasses.asdict(limits), "seed": seed})
            except _Dead:
                continue                       # restart the server once
            if not reply.get("ok"):
                for fd in fds:
                    os.close(fd)
                raise _Unavailable(reply.get("error", "cannot open a session"))
            sock = socket.socket(fileno=fds[0])
            pidfd = fds[1] if reply.get("pidfd") and len(fds) > 1 else None
            return _Proc(_Channel(sock, pidfd), reply["sid"], gen, reply.get("uid"))
        raise _Unavailable("the sandbox server keeps dying")

    def _kill(self, proc: _Proc, why: str, wait: bool = False, reply: bool = True) -> dict:
        """Kill a session process and everything of its uid; return how it ended.

        The server signals everything at once; `wait` makes it answer only when every process
        of the session is gone, `reply=False` not answer at all."""
        info = {"kind": "unknown", "code": 0, "desc": "the sandbox server restarted", "cpu_s": proc.cpu_total}
        try:
            srv = self._server
            if proc.gen == self._gen and not srv.dead and not self._closed:
                answer, _ = srv.request({"op": "kill", "sid": proc.sid, "why": why, "wait": wait},
                                        noreply=not reply)
                if answer and answer.get("ok"):
                    info = answer
        except _Dead:
            pass
        finally:
            proc.chan.close()
        return info

    def _interrupt(self, proc: _Proc):
        if proc.chan.pidfd is not None:
            try:
                signal.pidfd_send_signal(proc.chan.pidfd, signal.SIGINT)
                return
            except OSError:
                pass
        try:
            if proc.gen == self._gen:
                self._server.request({"op": "interrupt", "sid": proc.sid})
        except _Dead:
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
        self._history = []      # (cell, code, wall_s, status) of blocks that finished ok/error in-process
        self._cells = 0
        self._ids = itertools.count(1)
        self._replay = None     # (message id, deadline, number of blocks)
        self._note = ""
        self.closed = False
        self.uid = None         # the uid its process runs as (None until it starts, or without root)

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
            except Exception as e:          # never let a sandbox failure escape into the pipeline
                if self._sb.closed:
                    raise RuntimeError("the Sandbox was closed") from e
                log.exception("sandbox internal error")
                self._drop()
                return ExecResult(KILLED, error=f"sandbox failure: {e!r}", wall_s=time.monotonic() - started)

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
        except _Unavailable as e:
            return ExecResult(KILLED, error=f"sandbox unavailable: {e}", wall_s=time.monotonic() - started)
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
                self._proc.chan.send({"op": "replay", "id": mid,
                                      "blocks": [[h[0], h[1]] for h in self._history]},
                                     time.monotonic() + 5.0)
            except (_Dead, TimeoutError):
                pass                                   # noticed when waiting for the answer
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
            except _Dead:
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
                self._note = (f"note: the session's state was only partly restored: re-running its earlier "
                              f"blocks stopped at block {k + 1} of {n} ({msg.get('status')}); variables "
                              f"defined from there on are missing.")
                self._history = self._history[:k]
            else:
                changed = sum(1 for h, s in zip(self._history, statuses) if s != h[3])
                if changed:
                    self._note = (f"note: {changed} earlier block(s) behaved differently when re-run"
                                  " to restore the session.")
            return
        self._proc = None
        desc = msg.get("desc", "") if isinstance(msg, dict) else ""
        self._note = ("note: the session's state could not be restored (re-running its earlier blocks "
                      f"{'took too long' if how == 'timeout' else 'failed: ' + desc}); it starts empty.")
        self._history = []

    def _restore_text(self):
        n = len(self._history)
        if n:
            return (f" The session's process was restarted: its {n} earlier block(s) that ran to the end"
                    " are re-run silently (output discarded) to restore their variables.")
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
        except _Dead:
            how, msg = "dead", self._sb._kill(proc, "dead")
        wall = time.monotonic() - t0
        if how == "msg":
            proc.cpu_total = float(msg.get("cpu_total") or proc.cpu_total)
            proc.oom_kills = int(msg.get("oom_kills") or proc.oom_kills)
            status = msg.get("status")
            if status not in STATUSES:
                status = ERROR
            return ExecResult(status, _clean(msg.get("stdout")), _clean(msg.get("error")),
                              float(msg.get("wall_s") or wall), float(msg.get("cpu_s") or 0.0))
        # the process is gone: say why, restart it (re-running the history) right away
        cpu = max(float(msg.get("cpu_s") or 0.0) - proc.cpu_total, 0.0)
        desc = msg.get("desc", "the process ended")
        if int(msg.get("oom_kills") or 0) > proc.oom_kills:
            status = MEMORY
            error = _srv.memory_cap_text(dataclasses.asdict(lim), self._sb.limits.pool_memory_mb,
                                         "killed the session's process")
        elif how == "timeout":
            status = TIMEOUT
            error = (f"wall time limit {lim.wall_s:g} s exceeded; the block did not stop when interrupted"
                     f" and its process was killed.")
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
            except _Unavailable:
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
