"""The client's two kinds of channel: to the fork server (`Server`, which also starts it) and
to one session process (`Channel`). Only sockets and a subprocess: the lead never forks.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

from aimo.sandbox._server.sbx_protocol import ENV, HDR, MAX_MSG, frame
from aimo.sandbox.limits import SandboxError

REQUEST_TIMEOUT_S = 15.0
SERVER_PATH = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "_server"
)  # a folder, run by path
SERVER_ENV = dict(ENV, HOME="/", PYTHONHASHSEED="0")


def wait_fd(fd, timeout, events=select.POLLIN) -> bool:
    """Whether `fd` gets ready within `timeout` seconds (poll: fds above 1024 are fine)."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0, int(timeout * 1000 + 0.999))))


class Dead(Exception):
    """The session process is gone (or spoke garbage)."""


class Unavailable(Exception):
    """No session process could be started."""


class Channel:
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
        view = memoryview(frame(obj))
        while view:
            try:
                view = view[self.sock.send(view) :]
                continue
            except BlockingIOError:
                pass
            except OSError as e:
                raise Dead(str(e)) from None
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            wait_fd(self.sock.fileno(), wait, select.POLLOUT)

    def _parse(self):
        if len(self.buf) < 4:
            return None
        (n,) = HDR.unpack_from(self.buf)
        if n > MAX_MSG:
            raise Dead("protocol error (oversized message)")
        if len(self.buf) < 4 + n:
            return None
        raw = bytes(self.buf[4 : 4 + n])
        del self.buf[: 4 + n]
        try:
            msg = json.loads(raw)
        except ValueError:
            raise Dead("protocol error (bad message)") from None
        if not isinstance(msg, dict):
            raise Dead("protocol error (bad message)")
        return msg

    def _drain(self):
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return False
        except OSError as e:
            raise Dead(str(e)) from None
        if not data:
            raise Dead("end of stream")
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
                    raise Dead("process exited")


class Proc:
    """A live session process as the client knows it."""

    def __init__(self, chan, sid, gen, uid):
        self.chan, self.sid, self.gen, self.uid = chan, sid, gen, uid
        self.cpu_total = 0.0
        self.oom_kills = 0  # OOM kills in its cgroup known from its last answer


class Server:
    """The fork server's subprocess and its control channel."""

    def __init__(self, python, opts):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.started = time.monotonic()
        try:
            self.proc = subprocess.Popen(
                [python, "-s", "-P", SERVER_PATH, str(child.fileno())],
                pass_fds=[child.fileno()],
                env=dict(SERVER_ENV),
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            child.close()
        self.ctl = parent
        try:
            parent.send(json.dumps(opts).encode())
        except OSError:
            pass  # noticed by wait_ready
        self.lock = threading.Lock()
        self.info = None
        self.dead = False
        self.rids = itertools.count(1)
        self.graveyard = collections.deque()  # sids of sessions garbage-collected unclosed

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
                if wait_fd(self.ctl.fileno(), min(wait, 0.5)):
                    try:
                        data = self.ctl.recv(1 << 20)
                    except OSError:
                        data = b""
                    if not data:
                        self.dead = True
                        raise SandboxError(
                            "the sandbox server exited during start-up (see its stderr)"
                        )
                    self.info = json.loads(data)
                    self.info["client_startup_s"] = time.monotonic() - self.started
                    return self.info

    def request(self, msg, noreply=False, timeout=REQUEST_TIMEOUT_S):
        """Send `msg`; return (reply, fds). Raises Dead when the server is gone."""
        with self.lock:
            if self.dead:
                raise Dead("server gone")
            while self.graveyard:  # kills queued by __del__ (which must not lock)
                sid = self.graveyard.popleft()
                try:
                    self.ctl.send(
                        json.dumps(
                            {"op": "kill", "sid": sid, "wait": False, "noreply": True}
                        ).encode()
                    )
                except OSError:
                    pass
            rid = next(self.rids)
            msg = dict(msg, rid=rid, noreply=noreply)
            try:
                self.ctl.send(json.dumps(msg).encode())
            except OSError as e:
                self.dead = True
                raise Dead(f"server gone ({e})") from None
            if noreply:
                return None, []
            deadline = time.monotonic() + timeout
            while True:
                wait = deadline - time.monotonic()
                if wait <= 0 or not wait_fd(self.ctl.fileno(), wait):
                    self.dead = True
                    raise Dead("the sandbox server stopped answering")
                try:
                    data, fds, _, _ = socket.recv_fds(self.ctl, 1 << 20, 4)
                except OSError as e:
                    self.dead = True
                    raise Dead(f"server gone ({e})") from None
                if not data:
                    self.dead = True
                    raise Dead("the sandbox server exited")
                reply = json.loads(data)
                if reply.get("rid") == rid:
                    return reply, fds
                for fd in fds:  # a late answer to an abandoned request
                    os.close(fd)

    def close(self):
        if not self.dead:
            try:
                self.request({"op": "shutdown"}, timeout=10.0)
            except (Dead, ValueError):
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
        if base and os.path.isdir(base):  # the server was killed before it could clean up
            import shutil

            shutil.rmtree(base, ignore_errors=True)
        cg = (self.info or {}).get("cgroup")
        if cg and os.path.isdir(cg):
            from aimo.sandbox import _cgroup

            _cgroup.Pool(0, cg).remove_all()
