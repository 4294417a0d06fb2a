"""The uids of sessions: the uid blocks (one flock'ed lock file per block, so that pools on
one machine never share a uid) and `UidBook`, a part of `ForkServer`: handing out a uid, killing
what runs under the uids of a block or under one uid.

Its methods use the attributes `ForkServer.__init__` sets (free_uids, uid_blocks, pool, by_pid,
exited).
"""

from __future__ import annotations

import fcntl
import os
import signal
import time

from sbx_linux import alive_uids

UID_BASE, UID_BLOCK, UID_BLOCKS = 60000, 256, 20  # uids 60000..65119: 20 blocks of 256, a pool
# locks one block at start and more when it has over 256 sessions open


def lock_uid_block():
    """Hold an exclusive flock on one of UID_BLOCKS lock files: that block of uids is ours
    (for as long as the fd stays open), so pools on one machine never share a uid."""
    import tempfile

    d = tempfile.gettempdir()
    for k in range(UID_BLOCKS):
        path = os.path.join(d, f"aimo-sandbox-uids-{k}.lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return fd, UID_BASE + k * UID_BLOCK
    return None, None


class UidBook:
    """The uid half of `ForkServer` (a mixin: it has no state of its own)."""

    def _alloc_uid(self):
        if not self.free_uids:
            fd, base = lock_uid_block()  # all in use: take one more block of 256 uids
            if base is None:
                return None
            self.uid_blocks.append(base)
            self._kill_stale(base)
            self.free_uids.extend(range(base + UID_BLOCK - 1, base - 1, -1))
        return self.free_uids.pop()

    def _kill_stale(self, base):
        """Without a pid namespace, processes of a crashed earlier pool may still run with the
        uids of the block we just locked: kill them before any session gets those uids."""
        if self.pool["pidns"]:
            return  # the kernel killed them with that pool's namespace
        for _ in range(20):
            pids = []
            if not alive_uids(range(base, base + UID_BLOCK), pids):
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.01)

    def _signal_uid(self, uid):
        if self.pool["pidns"] and os.getpid() == 1:
            # As init of the pid namespace nothing inside can signal us (we install no handlers),
            # so switching the real/effective uid for a moment is safe and saves a fork.
            os.setresuid(uid, uid, 0)
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            finally:
                os.setresuid(0, 0, 0)
            return
        pid = os.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
                for _ in range(3):
                    os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        while True:  # reap the helper and every orphan it leaves us
            try:
                wpid, status, ru = os.wait3(0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if wpid == pid:
                break
            if wpid in self.by_pid:
                self.exited[wpid] = (status, ru.ru_utime + ru.ru_stime)
