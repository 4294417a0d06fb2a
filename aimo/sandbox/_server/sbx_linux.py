"""The server's system toolbox: libc calls, namespaces, mounts, capabilities and /proc.

Standard library only; used by the launcher, the fork server and the session worker alike.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38

WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

# --------------------------------------------------------------------------------------------
# libc: namespaces, mounts, prctl, capabilities

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags):
    _check(libc().unshare(ctypes.c_int(flags)), "unshare")


def _enc(s):
    return None if s is None else s.encode()


def mount(source, target, fstype, flags, data=None):
    enc = _enc
    _check(
        libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def prctl(option, arg2=0):
    z = ctypes.c_ulong(0)
    _check(libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), z, z, z), "prctl")


def drop_all_capabilities():
    """Empty the bounding, effective, permitted and inheritable capability sets (as root this
    makes RLIMIT_NPROC apply and file permissions bind, even though the uid stays 0)."""
    last = 63
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except (OSError, ValueError):
        pass
    for cap in range(last + 1):
        try:
            prctl(24, cap)  # PR_CAPBSET_DROP
        except OSError:
            pass
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    _check(libc().capset(hdr, data), "capset")


def set_loopback_up():
    """Bring up `lo` in the current network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))


def umount(target):
    _check(libc().umount2(target.encode(), ctypes.c_int(2)), f"umount {target}")  # MNT_DETACH


def python_paths():
    """Real paths an unprivileged session needs to read to run and import things: the
    interpreter, its prefixes, sys.path, and the directories of the shared libraries it has
    loaded (libpython can live outside sys.prefix, found through an absolute RUNPATH)."""
    paths = {os.path.realpath(sys.executable)}
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path):
        if p and os.path.exists(p):
            paths.add(os.path.realpath(p))
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                lib = parts[5].strip() if len(parts) == 6 else ""
                if (
                    lib.startswith("/")
                    and (lib.endswith(".so") or ".so." in lib)
                    and os.path.exists(lib)
                ):
                    paths.add(os.path.dirname(os.path.realpath(lib)))
    except OSError:
        pass
    return sorted(paths)


def under_world_writable(paths):
    """The outermost of `paths` that lie in a directory a session gets privately (/tmp, ...):
    they must be bind-mounted back into its private /tmp."""
    roots = [os.path.realpath(d) + "/" for d in WORLD_WRITABLE]
    found = []
    for p in sorted(paths):
        if any(p.startswith(r) for r in roots) and not any(p.startswith(k + "/") for k in found):
            found.append(p)
    return found


def private_tmp(size_mb, keep=()):
    """In our own mount namespace: a fresh tmpfs (mode 700) on /tmp, also bound on the other
    world-writable directories; the paths in `keep` (an interpreter, virtualenv or project that
    lives under /tmp) are bind-mounted back, read-only, at their own place. Returns the tmpfs's
    directory ("/" when none of WORLD_WRITABLE exists)."""
    held = [(p, os.open(p, os.O_PATH | os.O_CLOEXEC), os.path.isdir(p)) for p in keep]
    try:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        first = None
        for path in WORLD_WRITABLE:
            if not os.path.isdir(path):
                continue
            if first is None:
                mount(
                    "tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(size_mb)}m,mode=700"
                )
                first = path
            else:
                mount(first, path, None, MS_BIND)
        for path, fd, is_dir in held:
            parts = [q for q in os.path.dirname(path).split("/") if q]
            cur = "/"
            for part in parts:  # root-owned 0755 skeleton inside the tmpfs
                cur = os.path.join(cur, part)
                if not os.path.isdir(cur):
                    os.mkdir(cur)
                    os.chmod(cur, 0o755)
            if is_dir:
                os.mkdir(path)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            try:  # defence in depth: the uid cannot write there anyway
                mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
            except OSError:
                pass
    finally:
        for _, fd, _ in held:
            os.close(fd)
    return first or "/"


def set_oom_score_adj(value):
    """-1000: never the OOM killer's pick (launcher, fork server); 1000: its first pick (sessions,
    so that a full machine loses a code block, not the inference engine). Set as root, a session
    cannot lower it again."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError:
        pass


def _blocking_dir(path):
    """(first ancestor of `path` that others cannot traverse, its child on the way) or None."""
    cur = "/"
    for part in [p for p in path.split("/") if p]:
        nxt = os.path.join(cur, part)
        if not os.stat(cur).st_mode & 0o001:
            return cur, nxt
        cur = nxt
    return None


def expose_paths(paths):
    """In our own mount namespace, make `paths` reachable for any uid without changing the host.

    A directory on the way that others may not traverse (say /root, 0700) is covered with an
    empty tmpfs (0711) into which only the needed child (say /root/.pyenv) is bind-mounted back.
    Everything else there stays hidden. Returns the covered directories."""
    covered = []
    for _ in range(8):
        todo = {}
        for p in paths:
            hit = _blocking_dir(p)
            if hit:
                todo.setdefault(hit[0], set()).add(hit[1])
        if not todo:
            return covered
        for top, children in sorted(todo.items()):
            held = [
                (c, os.open(c, os.O_PATH | os.O_CLOEXEC), os.path.isdir(c))
                for c in sorted(children)
            ]
            st = os.stat(top)
            mount(
                "tmpfs",
                top,
                "tmpfs",
                MS_NOSUID | MS_NODEV,
                f"size=64k,mode=711,uid={st.st_uid},gid={st.st_gid}",
            )
            try:
                for child, fd, is_dir in held:
                    if is_dir:
                        os.mkdir(child, 0o755)
                    else:
                        os.close(os.open(child, os.O_CREAT | os.O_WRONLY, 0o644))
                    mount(f"/proc/self/fd/{fd}", child, None, MS_BIND | MS_REC)
            except OSError:
                umount(top)
                raise
            finally:
                for _, fd, _ in held:
                    os.close(fd)
            covered.append(top)
    return covered


# --------------------------------------------------------------------------------------------
# /proc: processes, their uids and their parents


def processes(threads=False):
    """(pid, state, ppid, uids, n) of every process, read from /proc/<pid>/status.

    `state` is its state letter (b"Z": a zombie; None if not shown), `ppid` its parent (None if
    not shown), `uids` its real, effective and saved uids (() if not shown) and `n` its number
    of threads when `threads` is true (else None: the file is read up to the Uid line only).
    Processes that end meanwhile are left out."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                data = f.read(4096)
        except OSError:
            continue
        state = ppid = n = None
        uids = ()
        for line in data.split(b"\n"):
            if line.startswith(b"State:"):
                state = (line.split()[1:2] or [None])[0]
            elif line.startswith(b"PPid:"):
                ppid = int(line.split()[1])
            elif line.startswith(b"Uid:"):
                uids = tuple(int(u) for u in line.split()[1:4])
                if not threads:
                    break
            elif line.startswith(b"Threads:"):
                n = int(line.split()[1])
        yield int(name), state, ppid, uids, n


def count_tasks(uid):
    """Processes and threads whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    return sum(n or 1 for _, _, _, uids, n in processes(threads=True) if uids[:1] == (uid,))


def alive_uids(uids, pids=None):
    """Which of `uids` still own a live (non-zombie) process, according to /proc
    (the pids of those processes are appended to `pids` when given)."""
    want = set(uids)
    alive = set()
    for pid, state, _, ids, _ in processes():
        hit = want.intersection(ids)
        if hit and state != b"Z":
            alive |= hit
            if pids is not None:
                pids.append(pid)
    return alive


def descendants(root):
    """Live (non-zombie) descendants of `root`, from the parent links in /proc."""
    children = {}
    for pid, state, ppid, _, _ in processes():
        if state != b"Z" and ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        for kid in children.get(todo.pop(), ()):
            found.append(kid)
            todo.append(kid)
    return found


def kill_tree(pid):
    """Stop `pid` (its process group) and its subtree, so that nothing forks any more, then
    SIGKILL the descendants; killing `pid` itself is left to the caller. (Without a uid of its
    own, a session is a child subreaper: every process it started, setsid() or not, stays in
    its subtree.)"""
    try:
        os.killpg(pid, signal.SIGSTOP)
    except OSError:
        try:
            os.kill(pid, signal.SIGSTOP)
        except OSError:
            return
    stopped = set()
    for _ in range(100):
        new = set(descendants(pid)) - stopped
        if not new:
            break
        for kid in new:
            try:
                os.kill(kid, signal.SIGSTOP)
            except OSError:
                pass
        stopped |= new
    for kid in stopped:
        try:
            os.kill(kid, signal.SIGKILL)
        except OSError:
            pass


def describe_wait_status(status):
    """('signal', n, text) or ('exit', code, text) for a wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return "signal", sig, f"killed by signal {sig} ({name})"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    return "exit", code, f"the process exited with code {code}"
