"""The session worker: one sandboxed process that runs a session's code blocks.

Forked by the fork server as a spare (namespaces and private /tmp made, as root), it waits for
its assignment (uid, limits, seed), drops to its uid and rlimits, then runs the blocks the
client sends over its stream socket, one at a time, in one namespace, output captured by a
`CappedWriter` (sbx_output.py). Tracebacks leave out the frames of this file and sbx_output.py.
"""

from __future__ import annotations

import builtins
import json
import os
import signal
import socket
import sys
import time

import sbx_output
from sbx_linux import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    PR_SET_NO_NEW_PRIVS,
    PR_SET_PDEATHSIG,
    count_tasks,
    drop_all_capabilities,
    mount,
    prctl,
    private_tmp,
    set_loopback_up,
    set_oom_score_adj,
    unshare,
)
from sbx_output import CappedWriter, _CpuExceeded, _Interrupted, _OutputLimit
from sbx_protocol import (
    ENV,
    ERROR,
    HDR,
    KILLED,
    MAX_MSG,
    MEMORY,
    OK,
    OUTPUT_LIMIT,
    TIMEOUT,
    memory_cap_text,
    recv_msg,
    send_msg,
)

SERVER_MODULES = (
    "sbx_fork_server",
    "sbx_linux",
    "sbx_output",
    "sbx_protocol",
    "sbx_session",
    "sbx_startup",
    "sbx_uids",
    "sbx_warm",
)  # the folder's siblings
OWN_FILES = (__file__, sbx_output.__file__)  # the frames tracebacks leave out


class SessionWorker:
    debug = False

    def __init__(self, sock, flags, scratch_base, scratch_mb):
        self.sock = sock
        self.flags = flags
        self.scratch_base = scratch_base
        self.scratch_mb = scratch_mb
        self.pid = os.getpid()
        self.in_user = False
        self.limits = {}

    # ---- set-up (runs as root, before the code's uid is known)
    def _prepare(self):
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        set_oom_score_adj(1000)
        keep = self.sock.detach()
        if keep != 3:
            os.dup2(keep, 3)
            os.close(keep)
        os.set_inheritable(3, False)
        self.sock = socket.socket(fileno=3)
        os.closerange(4, 1 << 16)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1) if self.debug else (0, 1, 2):
            os.dup2(null, fd)
        if null > 3:
            os.close(null)
        f = self.flags
        flags = (
            (CLONE_NEWNS if f.get("mountns") else 0)
            | (CLONE_NEWNET if f.get("netns") else 0)
            | (CLONE_NEWIPC if f.get("ipcns") else 0)
        )
        if flags:
            unshare(flags)
        if f.get("netns"):
            set_loopback_up()
        if f.get("mountns"):
            self.scratch = private_tmp(self.scratch_mb, f.get("keep", ()))

    def _assign(self, msg):
        self.sid = msg["sid"]
        self.limits = lim = msg["limits"]
        self.oom_file = msg.get("oom_file")
        self.pool_memory_mb = msg.get("pool_memory_mb")
        if self.oom_file and msg["uid"] is None:
            # root without a uid of its own could move itself out of its cgroup: hide the cgroup
            # file systems from it (it cannot unmount), reading its OOM count through an fd
            self.oom_fd = os.open(self.oom_file, os.O_RDONLY | os.O_CLOEXEC)
            if self.flags.get("mountns") and os.path.isdir("/sys/fs/cgroup"):
                mount(
                    "tmpfs",
                    "/sys/fs/cgroup",
                    "tmpfs",
                    MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                    "size=4k,mode=755",
                )
        uid = msg["uid"]
        if self.flags.get("mountns"):
            want = int(lim.get("scratch_mb", self.scratch_mb))
            if self.scratch != "/" and want != self.scratch_mb:
                mount(None, self.scratch, None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={want}m")
            if self.scratch != "/":
                os.chown(
                    self.scratch, uid if uid is not None else -1, uid if uid is not None else -1
                )
                os.chmod(self.scratch, 0o700)
        else:
            self.scratch = msg["scratch"]
            os.mkdir(self.scratch, 0o700)
            if uid is not None:
                os.chown(self.scratch, uid, uid)
        os.chdir(self.scratch)
        import resource

        mb = 1 << 20

        def setlim(res, value):
            try:
                resource.setrlimit(res, (value, value))
            except (ValueError, OSError):
                soft, hard = resource.getrlimit(res)
                value = min(value, hard) if hard != resource.RLIM_INFINITY else value
                resource.setrlimit(res, (value, value))

        setlim(resource.RLIMIT_AS, int(lim["memory_mb"]) * mb)
        if uid is not None:
            setlim(resource.RLIMIT_NPROC, int(lim["processes"]))
        else:
            # no uid of its own: the limit counts every task of our uid, so allow what exists now
            # plus `processes`; as root it binds only once the capabilities are gone
            if os.geteuid() == 0:
                drop_all_capabilities()
            setlim(resource.RLIMIT_NPROC, count_tasks(os.getuid()) + int(lim["processes"]))
            prctl(
                PR_SET_CHILD_SUBREAPER, 1
            )  # keep every descendant in our subtree (see _kill_tree)
        setlim(resource.RLIMIT_NOFILE, max(int(lim["open_files"]), 8))
        setlim(resource.RLIMIT_FSIZE, int(lim["file_size_mb"]) * mb)
        setlim(resource.RLIMIT_CORE, 0)
        setlim(resource.RLIMIT_MSGQUEUE, 0)
        setlim(resource.RLIMIT_MEMLOCK, 0)
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # a uid change clears it
            prctl(PR_SET_DUMPABLE, 1)  # /proc/self readable again; only our uid may ptrace
        try:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        except OSError:
            pass
        if os.getppid() != self.server_pid:
            os._exit(0)  # the server is already gone
        env = dict(
            ENV,
            HOME=self.scratch,
            TMPDIR=self.scratch,
            PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"),
        )
        os.environ.clear()
        os.environ.update(env)
        import types

        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins  # a module, as in any __main__
        sys.modules["__main__"] = main
        for name in SERVER_MODULES:  # as a one-file server was: not importable
            sys.modules.pop(name, None)
        self.ns = main.__dict__
        sys.argv = [""]
        sys.path = [p for p in sys.path if p]
        seed = int(msg.get("seed", 0))
        import random

        random.seed(seed)
        np = sys.modules.get("numpy")
        if np is not None:
            np.random.seed(seed % (2**32))
        signal.signal(signal.SIGINT, self._on_interrupt)
        signal.signal(signal.SIGXCPU, self._on_xcpu)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.register_at_fork(after_in_child=self._after_fork_in_child)

    def _after_fork_in_child(self):
        self.forked = True
        try:
            self.sock.detach()
            os.close(3)
        except OSError:
            pass

    forked = False

    def _on_interrupt(self, signum, frame):
        if self.in_user:
            raise _Interrupted()

    def _on_xcpu(self, signum, frame):
        if self.in_user:
            raise _CpuExceeded()

    def main(self):
        self.server_pid = os.getppid()
        try:
            self._prepare()
        except OSError as e:
            self._fail_setup(f"sandbox set-up failed: {e}")
        try:
            msg = recv_msg(self.sock)
        except (EOFError, OSError, ValueError):
            os._exit(0)
        try:
            self._assign(msg)
        except OSError as e:
            self._fail_setup(f"sandbox set-up failed: {e}")
        self._serve()

    def _fail_setup(self, text):
        try:
            while True:
                msg = recv_msg(self.sock)
                if msg.get("op") in ("run", "replay"):
                    send_msg(
                        self.sock,
                        {
                            "id": msg.get("id"),
                            "status": KILLED,
                            "error": text,
                            "stdout": "",
                            "wall_s": 0.0,
                            "cpu_s": 0.0,
                        },
                    )
                    break
        except BaseException:
            pass
        os._exit(1)

    def _recv(self):
        buf = b""
        recv = self._sock_recv
        while len(buf) < 4:
            chunk = recv(4 - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        (n,) = HDR.unpack(buf)
        if n > MAX_MSG:
            raise EOFError
        parts, got = [], 0
        while got < n:
            chunk = recv(min(n - got, 1 << 20))
            if not chunk:
                raise EOFError
            parts.append(chunk)
            got += len(chunk)
        return self._loads(b"".join(parts))

    def _send(self, obj):
        data = self._dumps(obj).encode()
        self._sock_sendall(HDR.pack(len(data)) + data)

    def _serve(self):
        # bound once: code that patches socket, json or os in the session cannot break the protocol
        self._sock_recv, self._sock_sendall = self.sock.recv, self.sock.sendall
        self._dumps, self._loads, self._exit, self._getpid = (
            json.dumps,
            json.loads,
            os._exit,
            os.getpid,
        )
        self._oom_kills = self._oom_counter(
            self.oom_file, getattr(self, "oom_fd", None), os.open, os.pread, os.close
        )
        while True:
            try:
                msg = self._recv()
            except BaseException:
                self._exit(0)
            if self.forked or self._getpid() != self.pid:
                self._exit(0)
            op = msg.get("op")
            if op == "run":
                res = self.execute(msg["code"], msg.get("cell", 0))
                res["id"] = msg.get("id")
            elif op == "replay":
                statuses = []
                res = {"id": msg.get("id"), "status": OK}
                for cell, code in msg["blocks"]:
                    r = self.execute(code, cell, quiet=True)
                    statuses.append(r["status"])
                    if r["status"] in (TIMEOUT, OUTPUT_LIMIT):
                        res["status"] = r["status"]
                        res["error"] = r["error"]
                        break
                res["statuses"] = statuses
                res["cpu_total"] = self._cpu()
            else:
                res = {"id": msg.get("id"), "status": ERROR, "error": f"unknown op {op!r}"}
            if self.forked or self._getpid() != self.pid:
                self._exit(0)
            try:
                self._send(res)
            except BaseException:
                self._exit(0)

    @staticmethod
    def _oom_counter(path, fd, o, pread, c):
        """How many of our processes the OOM killer ended (the `oom_kill` line of the cgroup's
        events, from `fd` or else `path`), read with functions bound now so that code patching
        os or open cannot hide it."""

        def count():
            if not path:
                return 0
            try:
                if fd is not None:
                    data = pread(fd, 4096, 0)
                else:
                    f = o(path, 0)
                    try:
                        data = pread(f, 4096, 0)
                    finally:
                        c(f)
                for line in data.split(b"\n"):
                    if line.startswith(b"oom_kill "):
                        return int(line.split()[1])
            except BaseException:
                pass
            return 0

        return count

    @staticmethod
    def _cpu():
        import resource

        a = resource.getrusage(resource.RUSAGE_SELF)
        b = resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def _arm_cpu_limit(self):
        import math
        import resource

        used = resource.getrusage(resource.RUSAGE_SELF)
        used = used.ru_utime + used.ru_stime
        soft = int(math.ceil(used + float(self.limits["cpu_s"])))
        try:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        except (ValueError, OSError):
            pass

    def execute(self, code, cell, quiet=False):
        import ast
        import linecache

        lim = self.limits
        keep = 0 if quiet else int(lim["output_chars"])
        writer = CappedWriter(keep, int(float(lim["max_output_mb"]) * (1 << 20)))
        filename = f"<cell {cell}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        if sys.stdin is None or sys.stdin.closed:
            sys.stdin = open(os.devnull, "r")
        saved = (sys.stdout, sys.stderr)
        sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = writer
        self._arm_cpu_limit()
        try:  # a block may have replaced our handlers: put them back
            signal.signal(signal.SIGINT, self._on_interrupt)
            signal.signal(signal.SIGXCPU, self._on_xcpu)
        except (ValueError, OSError):
            pass
        cpu0 = self._cpu()
        oom0 = self._oom_kills()
        t0 = time.perf_counter()
        status, error = OK, ""
        try:
            try:
                self.in_user = True
                tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST)
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr):
                    last = ast.Expression(tree.body.pop().value)
                exec(compile(tree, filename, "exec"), self.ns)
                if last is not None:
                    value = eval(compile(last, filename, "eval"), self.ns)
                    if value is not None:
                        writer.write(repr(value) + "\n")
            finally:
                self.in_user = False
        except _Interrupted as e:
            status = TIMEOUT
            error = self._where(
                e,
                f"wall time limit {float(lim['wall_s']):g} s exceeded; the block "
                "was interrupted (the session's state is kept)",
            )
        except _CpuExceeded as e:
            status = TIMEOUT
            error = self._where(
                e,
                f"CPU time limit {float(lim['cpu_s']):g} s exceeded; the block "
                "was interrupted (the session's state is kept)",
            )
        except _OutputLimit:
            status = OUTPUT_LIMIT
            error = (
                f"output limit exceeded: the block printed more than "
                f"{float(lim['max_output_mb']):g} MB and was stopped"
            )
        except SystemExit as e:
            if e.code is None or e.code == 0:
                status = OK
            else:
                status, error = ERROR, f"SystemExit: {e.code!r}"[:500]
        except MemoryError as e:
            status = MEMORY
            error = self._format(
                e, f"MemoryError: out of memory (limit {int(lim['memory_mb'])} MB of address space)"
            )
        except BaseException as e:
            status = ERROR
            error = self._format(e)
        finally:
            self.in_user = False
            sys.stdout, sys.stderr = saved
            sys.__stdout__, sys.__stderr__ = saved
        if self.forked or self._getpid() != self.pid:
            self._exit(0)
        wall = time.perf_counter() - t0
        oom = self._oom_kills()
        if oom > oom0:  # the kernel ended processes of ours: the cap, not the code
            status = MEMORY
            error = (
                memory_cap_text(
                    lim, self.pool_memory_mb, f"ended {oom - oom0} of the session's processes"
                )
                + ("\n" + error if error else "")
            )[:2500]
        try:
            out = writer.getvalue()
        except MemoryError:
            out = ""
        return {
            "status": status,
            "stdout": out,
            "error": error,
            "wall_s": wall,
            "cpu_s": max(self._cpu() - cpu0, 0.0),
            "cpu_total": self._cpu(),
            "chars": writer.total,
            "oom_kills": oom,
        }

    @staticmethod
    def _user_frames(tb, head=2, tail=4):
        """(first `head` and last `tail` frames outside OWN_FILES, number left out in between).

        Walks the traceback without formatting it: a RecursionError can have a million frames."""
        import traceback

        entries = [
            (f, n) for f, n in traceback.walk_tb(tb) if f.f_code.co_filename not in OWN_FILES
        ]
        omitted = 0
        if len(entries) > head + tail:
            omitted = len(entries) - head - tail
            entries = entries[:head] + entries[-tail:]
        frames = traceback.StackSummary.extract(iter(entries), lookup_lines=True)
        return list(frames), omitted

    def _where(self, exc, text):
        frames, _ = self._user_frames(exc.__traceback__, head=0, tail=8)
        cells = [f for f in frames if f.filename.startswith("<cell ")]
        if cells:
            f = cells[-1]
            line = (f.line or "").strip()
            text += f" at {f.filename[1:-1]}, line {f.lineno}" + (f": {line}" if line else "")
        return text

    def _format(self, exc, last_line=None):
        """The last lines of the traceback: a few frames and the exception."""
        import traceback

        try:
            shown, omitted = self._user_frames(exc.__traceback__)
            lines = []
            if shown:
                lines.append("Traceback (most recent call last):\n")
                for i, fs in enumerate(shown):
                    lines.extend(traceback.StackSummary.from_list([fs]).format())
                    if omitted and i == 1:
                        lines.append(f"  ... ({omitted} more frames) ...\n")
            if last_line is not None and isinstance(exc, MemoryError) and not str(exc):
                lines.append(last_line + "\n")
            else:
                lines.extend(traceback.format_exception_only(type(exc), exc))
            text = "".join(lines).rstrip("\n")
        except BaseException:
            text = f"{type(exc).__name__}: (traceback unavailable)"
        if len(text) > 2000:
            text = "...\n" + text[-2000:]
        return text
