"""The fork server's start-up (`PoolStartup`, a part of `ForkServer`): what runs once, before it
serves. The pool's mounts (/proc, hidden paths, the Python installation exposed), the warm-up
(sbx_warm.py), and the probes, in a throw-away child, of which per-session protections work.

Its methods use the attributes `ForkServer.__init__` sets (opts, pool, notes, keep, uid_base).
"""

from __future__ import annotations

import errno
import gc
import json
import os
import signal
import socket

from sbx_linux import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    PR_SET_CHILD_SUBREAPER,
    PR_SET_DUMPABLE,
    expose_paths,
    mount,
    prctl,
    private_tmp,
    python_paths,
    set_loopback_up,
    unshare,
)
from sbx_uids import UID_BLOCK
from sbx_warm import warm_up


class PoolStartup:
    """The start-up half of `ForkServer` (a mixin: it has no state of its own)."""

    def _setup_pool(self):
        signal.signal(
            signal.SIGINT, signal.SIG_IGN
        )  # no handler => nothing in the pid ns can signal us
        try:
            prctl(PR_SET_DUMPABLE, 0)
        except OSError:
            pass
        try:
            prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans come back to us (when not pid 1)
        except OSError:
            pass
        p = self.pool
        if p["pidns"] and p["mountns"]:
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                p["proc"] = True
            except OSError as e:
                self.notes["proc"] = f"cannot mount a private /proc ({e.strerror})"
        if p["netns"]:
            try:
                set_loopback_up()
            except OSError as e:
                self.notes["loopback"] = f"cannot bring up lo ({e.strerror})"
        if p["utsns"]:
            try:
                socket.sethostname("sandbox")
            except OSError:
                pass
        if p["mountns"] and os.geteuid() == 0:
            try:
                p["covered"] = expose_paths(python_paths())
            except OSError as e:
                self.notes["expose"] = f"cannot expose the Python installation ({e})"
        hidden = []
        for path in self.opts.get("hide_paths", []):
            if not p["mountns"]:
                self.notes["hide_paths"] = "no mount namespace: hide_paths ignored"
                break
            try:
                if os.path.isdir(path):
                    mount(
                        "tmpfs",
                        path,
                        "tmpfs",
                        MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                        "size=4k,mode=755",
                    )
                elif os.path.exists(path):
                    mount("/dev/null", path, None, MS_BIND)
                    mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
                hidden.append(path)
            except OSError as e:
                self.notes[f"hide {path}"] = e.strerror
        p["hidden_paths"] = hidden

    def _warm_up(self):
        warm_up(self.notes)  # what every session finds imported
        gc.collect()
        gc.freeze()

    def _probe_sessions(self):
        """Which per-session protections work here? Tried once in a throw-away child."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            res = {}
            try:
                os.close(r)
                for name, fn in (
                    ("mountns", self._probe_mount),
                    ("netns", self._probe_net),
                    ("ipcns", self._probe_ipc),
                    ("uid", self._probe_uid),
                ):
                    try:
                        fn()
                        res[name] = True
                    except OSError as e:
                        res[name] = e.strerror or str(e)
                os.write(w, json.dumps(res).encode())
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        try:
            res = json.loads(data)
        except ValueError:
            res = {}
        return res

    def _probe_mount(self):
        if os.geteuid() != 0 or not self.opts.get("namespaces", True):
            raise OSError(errno.EPERM, "not root or disabled")
        unshare(CLONE_NEWNS)
        self._probe_tmp = private_tmp(1, self.keep)  # what a session gets (the uid probe follows)

    def _probe_net(self):
        if os.geteuid() != 0 or not self.opts.get("namespaces", True):
            raise OSError(errno.EPERM, "not root or disabled")
        unshare(CLONE_NEWNET)
        set_loopback_up()

    def _probe_ipc(self):
        if os.geteuid() != 0 or not self.opts.get("namespaces", True):
            raise OSError(errno.EPERM, "not root or disabled")
        unshare(CLONE_NEWIPC)

    def _probe_uid(self):
        if self.uid_base is None:
            raise OSError(errno.EPERM, self.notes.get("uid", "no uid block"))
        u = self.uid_base + UID_BLOCK - 1
        if getattr(self, "_probe_tmp", "/") != "/":
            os.chown(self._probe_tmp, u, u)  # as _assign does for a session
        os.setgroups([])
        os.setresgid(u, u, u)
        os.setresuid(u, u, u)
        bad = [
            p
            for p in python_paths()
            if not os.access(p, os.R_OK if os.path.isfile(p) else os.R_OK | os.X_OK)
        ]
        if bad:
            raise OSError(
                errno.EACCES, f"an unprivileged uid cannot read the Python installation ({bad[0]})"
            )
