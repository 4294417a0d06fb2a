"""The fork server: pid 1 of the pool's namespaces; warms up once, then forks every session.

It answers the client on the control channel, a SOCK_SEQPACKET socket carrying one JSON object
per packet (file descriptors attached with SCM_RIGHTS): "open" hands out a pre-forked spare
(its socket and a pidfd), "kill" ends a session and everything of its uid, "interrupt",
"ping", "shutdown". It keeps the uid blocks, the sessions' memory cgroups and the spares.
What runs once before it serves is in sbx_startup.py, the uid bookkeeping in sbx_uids.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import time

from sbx_linux import (
    alive_uids,
    describe_wait_status,
    kill_tree,
    python_paths,
    under_world_writable,
)
from sbx_protocol import send_msg
from sbx_session import SessionWorker
from sbx_startup import PoolStartup
from sbx_uids import UID_BLOCK, UidBook


class ForkServer(PoolStartup, UidBook):
    """The fork server's state and its control loop; the start-up (the pool's mounts, the
    warm-up, the probes) comes from `PoolStartup`, the uid bookkeeping from `UidBook`."""

    def __init__(self, ctl_fd, opts, uid_base, pool, notes):
        self.started = time.monotonic()
        self.ctl = socket.socket(fileno=ctl_fd)
        self.ctl.setblocking(True)
        self.opts = opts
        self.uid_base = uid_base
        self.pool = pool
        self.notes = notes
        self.sessions = {}  # sid -> dict(pid, uid, scratch)
        self.by_pid = {}  # pid -> sid
        self.exited = {}  # pid -> (status, cpu_s)
        self.dying = []  # infos of killed sessions whose uid may still own processes
        self.spares = []  # (pid, client-end socket)
        self.free_uids = (
            None if uid_base is None else list(range(uid_base + UID_BLOCK - 1, uid_base - 1, -1))
        )
        self.uid_blocks = [uid_base] if uid_base is not None else []
        self.next_sid = 1
        self.scratch_base = None
        self.session_flags = {}
        self.cg = None  # the pool's memory cgroup (_cgroup.Pool), set by the launcher
        self.cg_dirs = {}  # pid of a spare or session process -> its cgroup
        self.cg_stale = []  # cgroups of ended sessions still busy (processes dying)
        self.expected, self.strict = [], False
        self.keep = []  # Python paths under /tmp & co., bound into each private /tmp

    def serve(self):
        self._setup_pool()
        self._warm_up()
        self.keep = under_world_writable(python_paths())
        probe = self._probe_sessions()
        f = self.session_flags
        f["keep"] = self.keep
        f["mountns"] = probe.get("mountns") is True
        f["ipcns"] = probe.get("ipcns") is True
        f["netns"] = probe.get("netns") is True and bool(self.opts.get("net_per_session", True))
        f["uid"] = probe.get("uid") is True
        if not f["uid"]:
            self.uid_base, self.free_uids = None, None
        else:
            self._kill_stale(self.uid_base)
        for k in ("mountns", "netns", "ipcns", "uid"):
            if probe.get(k) is not True and k not in self.notes:
                self.notes[f"session {k}"] = str(probe.get(k))
        if not f["mountns"]:
            import tempfile

            self.scratch_base = tempfile.mkdtemp(prefix="aimo-sandbox-")
            os.chmod(self.scratch_base, 0o711)
        prot = {
            "uid": f["uid"],
            "pidns": self.pool["pidns"],
            "netns": self.pool["netns"] or f["netns"],
            "netns_per_session": f["netns"],
            "mountns": f["mountns"],
            "private_tmp": f["mountns"],
            "ipcns": f["ipcns"] or self.pool["ipcns"],
            "proc": bool(self.pool.get("proc")),
            "hidden_paths": self.pool.get("hidden_paths", []),
            "uid_base": self.uid_base if f["uid"] else None,
            "memory_cgroup": self.cg is not None,
            "pool_memory_mb": int(self.opts["pool_memory_mb"]) if self.cg is not None else None,
        }
        self.protections = prot
        self.ctl.send(
            json.dumps(
                {
                    "ready": True,
                    "protections": prot,
                    "notes": self.notes,
                    "expected": self.expected,
                    "strict": self.strict,
                    "cgroup": self.cg.path if self.cg is not None else None,
                    "startup_s": time.monotonic() - self.started,
                    "scratch_base": self.scratch_base,
                    "pid": os.getpid(),
                }
            ).encode()
        )
        self._fill_spares()
        self._loop()

    # ---- main loop
    def _loop(self):
        poller = select.poll()
        poller.register(self.ctl.fileno(), select.POLLIN)
        while True:
            try:
                events = poller.poll(5 if self.dying else 100)
            except InterruptedError:
                events = []
            self._reap()
            if self.dying:
                self._finish_dying()
            if not events:
                self._fill_spares()
                if self.cg_stale:
                    self.cg_stale = [d for d in self.cg_stale if not self.cg.remove(d)]
                continue
            try:
                data = self.ctl.recv(1 << 20)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                self._shutdown()
                return
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            self.rid = msg.get("rid")
            op = msg.get("op")
            if op == "open":
                self._op_open(msg)
            elif op == "kill":
                reply = self._kill_session(
                    msg["sid"], msg.get("why", "kill"), bool(msg.get("wait", True))
                )
                if not msg.get("noreply"):
                    self._reply(reply)
            elif op == "interrupt":
                info = self.sessions.get(msg["sid"])
                if info:
                    try:
                        os.kill(info["pid"], signal.SIGINT)
                    except OSError:
                        pass
                self._reply({"ok": True})
            elif op == "ping":
                self._reply(
                    {"ok": True, "sessions": len(self.sessions), "spares": len(self.spares)}
                )
            elif op == "shutdown":
                self._shutdown()
                self._reply({"ok": True})
                return
            else:
                self._reply({"ok": False, "error": f"unknown op {op!r}"})
            if not poller.poll(0):  # answer queued requests first, then refill the spares
                self._fill_spares()

    rid = None

    def _reply(self, obj, fds=()):
        obj["rid"] = self.rid
        data = json.dumps(obj).encode()
        try:
            if fds:
                socket.send_fds(self.ctl, [data], list(fds))
            else:
                self.ctl.send(data)
        except OSError:
            pass

    def _reap(self):
        while True:
            try:
                pid, status, ru = os.wait3(os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid in self.by_pid:
                self.exited[pid] = (status, ru.ru_utime + ru.ru_stime)
            else:
                for spare in [sp for sp in self.spares if sp[0] == pid]:
                    spare[1].close()
                    self.spares.remove(spare)
                self._drop_cgroup(pid)

    def _drop_cgroup(self, pid):
        path = self.cg_dirs.pop(pid, None)
        if path is not None and not self.cg.remove(path):
            self.cg_stale.append(path)

    # ---- sessions
    def _fill_spares(self):
        want = int(self.opts.get("spares", 2))
        while len(self.spares) < want:
            try:
                self.spares.append(self._fork_spare())
            except OSError:
                break

    def _fork_spare(self):
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                parent_end.close()
                self.ctl.detach()  # their fds are closed in _prepare
                for _, sock in self.spares:
                    sock.detach()
                worker = SessionWorker(
                    child_end,
                    self.session_flags,
                    self.scratch_base,
                    int(self.opts.get("scratch_mb", 256)),
                )
                worker.debug = bool(self.opts.get("debug"))
                worker.main()
            except BaseException:
                if self.opts.get("debug"):
                    import traceback

                    traceback.print_exc()
            os._exit(0)
        child_end.close()
        if self.cg is not None:  # its own cgroup now; the cap is set when it is assigned
            try:
                path = self.cg.leaf(f"p{pid}")
                self.cg_dirs[pid] = path
                self.cg.move(path, pid)
            except OSError:
                os.kill(pid, signal.SIGKILL)
                parent_end.close()
                os.waitpid(pid, 0)
                self._drop_cgroup(pid)
                raise
        return pid, parent_end

    def _op_open(self, msg):
        uid = None
        if self.free_uids is not None:
            uid = self._alloc_uid()
            if uid is None:
                self._reply(
                    {"ok": False, "error": f"too many open sessions ({len(self.sessions)})"}
                )
                return
        sid = self.next_sid
        self.next_sid += 1
        scratch = os.path.join(self.scratch_base, f"s{sid}") if self.scratch_base else None
        for _ in range(3):
            if not self.spares:
                self._fill_spares()
                if not self.spares:
                    break
            pid, sock = self.spares.pop(0)
            assign = {
                "op": "assign",
                "sid": sid,
                "uid": uid,
                "limits": msg["limits"],
                "seed": msg.get("seed", 0),
                "scratch": scratch,
                "oom_file": None,
            }
            try:
                if self.cg is not None:
                    path = self.cg_dirs[pid]
                    self.cg.set_limit(path, msg["limits"]["session_memory_mb"])
                    assign["oom_file"] = self.cg.events_file(path)
                    assign["pool_memory_mb"] = self.protections["pool_memory_mb"]
                send_msg(sock, assign)
            except (OSError, KeyError):
                sock.close()
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except (AttributeError, OSError):  # kernels before 5.3
                pidfd = None
            self.sessions[sid] = {"pid": pid, "uid": uid, "scratch": scratch}
            self.by_pid[pid] = sid
            fds = [sock.fileno()] + ([pidfd] if pidfd is not None else [])
            self._reply(
                {"ok": True, "sid": sid, "pid": pid, "uid": uid, "pidfd": pidfd is not None}, fds
            )
            sock.close()
            if pidfd is not None:
                os.close(pidfd)
            return
        if uid is not None:
            self.free_uids.append(uid)
        self._reply({"ok": False, "error": "cannot start a session process"})

    def _kill_session(self, sid, why, wait=True):
        """SIGKILL a session's process group and every process of its uid.

        Returns how the session process ended (when it is reaped within a few milliseconds).
        With `wait`, returns only once no process of the uid is left; otherwise the server
        finishes the sweep in its loop and the uid is reused only after that."""
        info = self.sessions.pop(sid, None)
        if info is None:
            return {"ok": False, "error": "no such session"}
        pid, uid = info["pid"], info["uid"]
        if uid is None and pid not in self.exited:
            kill_tree(pid)
        if pid not in self.exited:
            for fn, target in ((os.killpg, pid), (os.kill, pid)):  # the session leads its group
                try:
                    fn(target, signal.SIGKILL)
                except OSError:
                    pass
        if uid is not None:
            self._signal_uid(uid)
        self._sweep_cgroup(pid)
        deadline = time.monotonic() + (3.0 if wait or uid is None else 0.05)
        while pid not in self.exited and time.monotonic() < deadline:
            try:
                wpid, status, ru = os.wait4(pid, os.WNOHANG)
            except ChildProcessError:
                self.exited[pid] = (0, 0.0)
                break
            if wpid == pid:
                self.exited[pid] = (status, ru.ru_utime + ru.ru_stime)
                break
            time.sleep(0.0005)
        self.by_pid.pop(pid, None)
        status, cpu = self.exited.pop(pid, (None, 0.0))
        oom = self.cg.oom_kills(self.cg_dirs[pid]) if pid in self.cg_dirs else 0
        self.dying.append(info)
        if wait:
            self._finish_dying(block=True)
        if status is None:
            return {
                "ok": True,
                "kind": "unknown",
                "code": 0,
                "desc": "the process did not exit",
                "cpu_s": cpu,
                "oom_kills": oom,
            }
        kind, code, desc = describe_wait_status(status)
        return {
            "ok": True,
            "kind": kind,
            "code": code,
            "desc": desc,
            "cpu_s": cpu,
            "oom_kills": oom,
        }

    def _finish_dying(self, block=False):
        """Free the uids of killed sessions whose processes are all gone; re-signal the others."""
        for attempt in range(400 if block else 1):
            self._reap()
            uids = {info["uid"] for info in self.dying if info["uid"] is not None}
            alive = alive_uids(uids) if uids else set()
            keep = []
            for info in self.dying:
                if info["uid"] in alive:
                    self._signal_uid(info["uid"])
                    keep.append(info)
                    continue
                if self._sweep_cgroup(info["pid"]):
                    keep.append(info)
                    continue
                if info["scratch"]:
                    import shutil

                    shutil.rmtree(info["scratch"], ignore_errors=True)
                if self.cg is not None:
                    self._drop_cgroup(info["pid"])
                if info["uid"] is not None:
                    self.free_uids.append(info["uid"])
            self.dying = keep
            if not keep:
                return
            if block:
                time.sleep(min(0.0005 * attempt, 0.01))

    def _sweep_cgroup(self, pid):
        """SIGKILL every process in the cgroup of session process `pid`; whether there were any.
        Catches what a session without a uid of its own left after its process exited (orphans
        re-parented to us, setsid() daemons): every descendant stays in the session's cgroup."""
        path = self.cg_dirs.get(pid)
        if path is None:
            return False
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return False
        pids = [p for p in pids if p > 1]  # 0: a process outside our pid namespace; 1: ourselves
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        return bool(pids)

    def _shutdown(self):
        for sid in list(self.sessions):
            self._kill_session(sid, "shutdown", wait=False)
        self._finish_dying(block=True)
        for pid, sock in self.spares:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            sock.close()
        self.spares = []
        deadline = time.monotonic() + 1.0  # reap what we killed rather than leave zombies
        while time.monotonic() < deadline:
            try:
                if os.wait3(os.WNOHANG)[0] == 0:
                    time.sleep(0.002)
            except ChildProcessError:
                break
            except InterruptedError:
                pass
        if self.scratch_base:
            import shutil

            shutil.rmtree(self.scratch_base, ignore_errors=True)
