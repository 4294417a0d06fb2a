"""Memory caps for the sandbox through the kernel's memory cgroup (v1 or v2), standard library only.

Layout, under the cgroup of the process that starts the pool (or, on cgroup v2, beside it when
that cgroup holds processes and so cannot have controlled children)::

    aimo-sandbox-<pid>/      the pool's cap (pool_memory_mb), for everything below
        server/              the launcher and the fork server (never the OOM killer's pick)
        p<pid>/              one per session process (session_memory_mb), made when it is forked

The fork server loads this file by path (it never imports the aimo package); the client imports
it to remove what a killed server left. Nothing here raises for a machine without cgroups:
`locate()` says why not, and callers report that once.
"""

from __future__ import annotations

import errno
import os
import time

MB = 1 << 20


def _read(path):
    with open(path) as f:
        return f.read()


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


class NoPlace(OSError):
    """cgroup v2 has no cgroup we may give controlled children: ours holds processes (v2 allows
    those only in leaves) and its parent is not ours to use (a container's cgroup namespace).
    The machine then does not offer the caps, as if it had no memory cgroup."""


def locate():
    """(version, directory of our own memory cgroup, None) or (None, None, why not)."""
    mounts = {}  # version -> (mount point, root in the hierarchy)
    try:
        for line in _read("/proc/self/mountinfo").splitlines():
            left, _, right = line.partition(" - ")
            fields, (fstype, _src, superopts) = left.split(), right.split()[:3]
            root, point, opts = fields[3], fields[4], fields[5].split(",")
            if "rw" not in opts:
                continue
            if fstype == "cgroup" and "memory" in superopts.split(","):
                mounts.setdefault(1, (point, root))
            elif fstype == "cgroup2":
                try:
                    if "memory" in _read(os.path.join(point, "cgroup.controllers")).split():
                        mounts.setdefault(2, (point, root))
                except OSError:
                    pass
        own = {}
        for line in _read("/proc/self/cgroup").splitlines():
            hid, controllers, path = line.split(":", 2)
            if hid == "0" and not controllers:
                own[2] = path
            elif "memory" in controllers.split(","):
                own[1] = path
    except (OSError, ValueError) as e:
        return None, None, f"cannot read the cgroup mounts ({e})"
    for version in (2, 1):  # pure v2 first; a hybrid machine's memory is on v1
        if version in mounts and version in own:
            point, root = mounts[version]
            rel = os.path.relpath(own[version], root) if own[version].startswith(root) else None
            if rel is None or rel.startswith(".."):
                continue
            d = os.path.normpath(os.path.join(point, rel))
            if os.path.isdir(d) and os.access(d, os.W_OK):
                return version, d, None
            return None, None, f"the memory cgroup {d} is not writable"
    return (
        None,
        None,
        "no read-write memory cgroup is mounted (v1 memory controller or v2 with memory)",
    )


class Pool:
    """The pool's cgroup and its session cgroups."""

    def __init__(self, version, path):
        self.version, self.path = version, path
        self.server = os.path.join(path, "server")

    @classmethod
    def create(cls, limit_mb, name):
        """Make the pool's cgroup with its cap and the server's leaf; raises OSError saying why."""
        version, own, why = locate()
        if version is None:
            raise OSError(errno.ENOENT, why)
        parents = [own]
        if version == 2 and os.path.exists(os.path.join(os.path.dirname(own), "cgroup.procs")):
            parents.append(os.path.dirname(own))
        last = None
        for parent in parents:
            try:
                if version == 2:
                    _enable_memory(parent)
                path = _mkdir_unique(os.path.join(parent, name))
            except OSError as e:
                last = e
                continue
            pool = cls(version, path)
            try:
                pool.set_limit(path, limit_mb)
                if version == 2:
                    _enable_memory(path)
                os.mkdir(pool.server)
            except OSError:
                pool.remove_all(timeout=0)
                raise
            return pool
        if version == 2 and last.errno == errno.EBUSY and len(parents) == 1:
            raise NoPlace(errno.EBUSY, f"cgroup v2: {own} holds processes and has no parent to use")
        raise last

    def leaf(self, name):
        path = os.path.join(self.path, name)
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        return path

    def set_limit(self, path, mb):
        """Cap `path` at `mb` MiB of memory, swap included (a session must not swap the host)."""
        limit = str(int(mb) * MB)
        if self.version == 1:
            _write(os.path.join(path, "memory.limit_in_bytes"), limit)
            swap = os.path.join(path, "memory.memsw.limit_in_bytes")  # only with swap accounting
            if os.path.exists(swap):
                _write(swap, limit)
        else:
            _write(os.path.join(path, "memory.max"), limit)
            swap = os.path.join(path, "memory.swap.max")
            if os.path.exists(swap):
                _write(swap, "0")

    def move(self, path, pid=0):
        """Put process `pid` (0: the caller) into the cgroup `path`."""
        _write(os.path.join(path, "cgroup.procs"), str(pid))

    def events_file(self, path):
        return os.path.join(path, "memory.oom_control" if self.version == 1 else "memory.events")

    def oom_kills(self, path):
        return oom_kills(self.events_file(path))

    def remove(self, path):
        """rmdir `path`; False while processes are still in it."""
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return True

    def remove_all(self, timeout=2.0):
        """Remove the session cgroups and the pool's (processes just killed may take a moment)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                kids = [e.path for e in os.scandir(self.path) if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                return True
            except OSError:
                kids = []
            ok = all([self.remove(k) for k in kids]) and self.remove(self.path)
            if ok or time.monotonic() >= deadline:
                return ok
            time.sleep(0.02)


def oom_kills(events_file):
    """How many processes of a cgroup the OOM killer ended (the `oom_kill` line), or 0."""
    try:
        for line in _read(events_file).splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _enable_memory(path):
    """cgroup v2: let the children of `path` have memory caps (EBUSY where `path` holds processes)."""
    control = os.path.join(path, "cgroup.subtree_control")
    if "memory" not in _read(control).split():
        _write(control, "+memory")


def _mkdir_unique(path):
    for k in range(100):
        cand = path if k == 0 else f"{path}.{k}"
        try:
            os.mkdir(cand)
            return cand
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, f"cannot make a cgroup beside {path}")
