"""The sandbox's server side: launcher, fork server and session worker (standard library only).

The client (``aimo.sandbox.client``) runs this file by path with ``python -s -P``, so the server
never imports the ``aimo`` package or anything of the caller's process::

    python -s -P _server.py <control fd>        (the options follow as the first message)

Process tree (when root and the kernel allows namespaces)::

    lead process (client; never forked)
     └─ launcher         unshares pid+net+mount+uts+ipc namespaces, forks, waits; holds the uid-block lock
         └─ fork server  pid 1 of the new pid namespace; imports sympy, numpy, ... once
             ├─ session  forked from the warm fork server, own mount/ipc(/net) namespace,
             │   └─ ...  private /tmp, rlimits, own unprivileged uid; runs code blocks
             └─ spare    a pre-forked, not yet assigned session (hides fork latency)

Messages: the control channel (client <-> fork server) is a SOCK_SEQPACKET socket carrying one
JSON object per packet, file descriptors attached with SCM_RIGHTS; a session channel
(client <-> session) is a SOCK_STREAM socket carrying JSON objects, each prefixed by its
length (4 bytes, big-endian). Nothing coming from a session is ever unpickled by the client.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import sys
import time

# --------------------------------------------------------------------------------------------
# constants shared with the client (which imports this module; importing it has no side effect)

OK, ERROR, TIMEOUT, MEMORY = "ok", "error", "timeout", "memory"
OUTPUT_LIMIT, KILLED = "output_limit", "killed"

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38

UID_BASE, UID_BLOCK, UID_BLOCKS = 60000, 256, 20   # uids 60000..65119: 20 blocks of 256, a pool
# locks one block at start and more when it has over 256 sessions open
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
WARM_MODULES = ("math", "cmath", "itertools", "functools", "fractions", "decimal", "collections",
                "heapq", "bisect", "random", "re", "string", "statistics", "operator", "numbers",
                "typing", "dataclasses", "json", "time", "datetime", "copy", "array", "struct",
                "numpy", "numpy.random", "numpy.linalg", "numpy.polynomial", "mpmath", "sympy",
                "sympy.ntheory", "sympy.combinatorics", "sympy.solvers.diophantine")
MAX_MSG = 1 << 26          # no message on a session channel may claim to be longer (64 MiB)
HDR = struct.Struct("!I")

# --------------------------------------------------------------------------------------------
# small system helpers

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


def mount(source, target, fstype, flags, data=None):
    enc = (lambda s: None if s is None else s.encode())
    _check(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


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
            prctl(24, cap)                                   # PR_CAPBSET_DROP
        except OSError:
            pass
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)               # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    _check(libc().capset(hdr, data), "capset")


def count_tasks(uid):
    """Processes and threads whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                data = f.read(4096)
        except OSError:
            continue
        real = threads = None
        for line in data.split(b"\n"):
            if line.startswith(b"Uid:"):
                real = int(line.split()[1])
            elif line.startswith(b"Threads:"):
                threads = int(line.split()[1])
        if real == uid:
            n += threads or 1
    return n


def set_loopback_up():
    """Bring up `lo` in the current network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))


def umount(target):
    _check(libc().umount2(target.encode(), ctypes.c_int(2)), f"umount {target}")   # MNT_DETACH


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
                if lib.startswith("/") and (lib.endswith(".so") or ".so." in lib) and os.path.exists(lib):
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
                mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(size_mb)}m,mode=700")
                first = path
            else:
                mount(first, path, None, MS_BIND)
        for path, fd, is_dir in held:
            parts = [q for q in os.path.dirname(path).split("/") if q]
            cur = "/"
            for part in parts:                   # root-owned 0755 skeleton inside the tmpfs
                cur = os.path.join(cur, part)
                if not os.path.isdir(cur):
                    os.mkdir(cur)
                    os.chmod(cur, 0o755)
            if is_dir:
                os.mkdir(path)
            else:
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            try:                                 # defence in depth: the uid cannot write there anyway
                mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
            except OSError:
                pass
    finally:
        for _, fd, _ in held:
            os.close(fd)
    return first or "/"


_cgroup_mod = None


def cgroup_module():
    """aimo/sandbox/_cgroup.py, loaded by path (the server never imports the aimo package)."""
    global _cgroup_mod
    if _cgroup_mod is None:
        import importlib.util
        here = os.path.dirname(os.path.abspath(__file__))
        spec = importlib.util.spec_from_file_location("_aimo_sandbox_cgroup", os.path.join(here, "_cgroup.py"))
        _cgroup_mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_cgroup_mod)
    return _cgroup_mod


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
            held = [(c, os.open(c, os.O_PATH | os.O_CLOEXEC), os.path.isdir(c)) for c in sorted(children)]
            st = os.stat(top)
            mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV,
                  f"size=64k,mode=711,uid={st.st_uid},gid={st.st_gid}")
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


def memory_cap_text(limits, pool_mb, what):
    """The error of a block whose session reached its memory cgroup's cap (or the pool's)."""
    pool = f", or all sessions together the pool's {int(pool_mb)} MB" if pool_mb else ""
    return (f"MemoryError: memory cap reached (all processes of the session together may hold "
            f"{int(limits.get('session_memory_mb', 0))} MB{pool}); the kernel's OOM killer {what}.")


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


def send_msg(sock, obj):
    """Length-prefixed JSON on a stream socket (blocking)."""
    data = json.dumps(obj).encode()
    sock.sendall(HDR.pack(len(data)) + data)


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def recv_msg(sock):
    (n,) = HDR.unpack(_recv_exact(sock, HDR.size))
    if n > MAX_MSG:
        raise EOFError
    return json.loads(_recv_exact(sock, n))


# --------------------------------------------------------------------------------------------
# launcher: namespaces, then the fork server as pid 1


def _lock_uid_block():
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


def launcher_main(ctl_fd):
    # the options come as the first message (not argv: /proc/<pid>/cmdline is world-readable)
    with socket.socket(fileno=os.dup(ctl_fd)) as ctl:
        opts = json.loads(ctl.recv(1 << 20) or b"{}")
    os.setsid() if os.getsid(0) != os.getpid() else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = os.geteuid() == 0
    use_ns = root and opts.get("namespaces", True)
    unshared = {}
    notes = {}
    lock_fd, uid_base = (None, None)
    if root and opts.get("drop_privileges", True):
        lock_fd, uid_base = _lock_uid_block()
        if uid_base is None:
            notes["uid"] = "all uid blocks are in use"
    else:
        notes["uid"] = "not root" if not root else "disabled (drop_privileges=False)"
    cg, cg_home, cg_offered = None, None, False
    if root:
        set_oom_score_adj(-1000)
        version, cg_home, why = cgroup_module().locate()
        cg_offered = version is not None
        try:
            if not cg_offered:
                raise OSError(errno.ENOENT, why)
            cg = cgroup_module().Pool.create(opts.get("pool_memory_mb", 4096), f"aimo-sandbox-{os.getpid()}")
            cg.move(cg.server)          # the fork server and all it forks start below the pool's cap
        except OSError as e:
            notes["memory_cgroup"] = e.strerror or str(e)
            cg = None
            cg_offered = cg_offered and not isinstance(e, cgroup_module().NoPlace)
    else:
        notes["memory_cgroup"] = "not root"
    pool = {"pidns": False, "netns": False, "mountns": False, "utsns": False, "ipcns": False}
    if use_ns:
        wanted = [("pidns", CLONE_NEWPID), ("netns", CLONE_NEWNET), ("mountns", CLONE_NEWNS),
                  ("utsns", CLONE_NEWUTS), ("ipcns", CLONE_NEWIPC)]
        try:
            unshare(sum(f for _, f in wanted))
            for name, _ in wanted:
                pool[name] = True
        except OSError:
            for name, flag in wanted:
                try:
                    unshare(flag)
                    pool[name] = True
                except OSError as e:
                    notes[name] = f"unshare refused ({e.strerror})"
        unshared = dict(pool)
        if pool["mountns"]:
            try:
                mount(None, "/", None, MS_REC | MS_PRIVATE)
            except OSError as e:
                pool["mountns"] = False
                notes["mountns"] = f"cannot make / private ({e.strerror})"
    else:
        for name in pool:
            notes[name] = "not root" if not root else "disabled (namespaces=False)"
    # what must hold here; with root and namespaces, a missing one is an error at start-up
    expected = (["uid"] if root and opts.get("drop_privileges", True) else []) \
        + (["memory_cgroup"] if cg_offered else [])
    strict = use_ns and all(unshared.values())
    if strict:
        expected += ["pidns", "netns", "mountns", "private_tmp", "ipcns", "proc"] \
            + (["netns_per_session"] if opts.get("net_per_session", True) else [])
    pid = os.fork()
    if pid == 0:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            server = ForkServer(ctl_fd, opts, uid_base if lock_fd is not None else None, pool, notes)
            server.cg, server.expected, server.strict = cg, expected, strict
            server.serve()
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(70)
        os._exit(0)
    os.close(ctl_fd)          # only the fork server holds the server end now
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
    if cg is not None:              # leave the pool's cgroup and remove it (and what sessions left)
        try:
            cg.move(cg_home)
        except OSError:
            pass
        cg.remove_all()
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 1)


# --------------------------------------------------------------------------------------------
# fork server


class ForkServer:
    def __init__(self, ctl_fd, opts, uid_base, pool, notes):
        self.started = time.monotonic()
        self.ctl = socket.socket(fileno=ctl_fd)
        self.ctl.setblocking(True)
        self.opts = opts
        self.uid_base = uid_base
        self.pool = pool
        self.notes = notes
        self.sessions = {}        # sid -> dict(pid, uid, scratch)
        self.by_pid = {}          # pid -> sid
        self.exited = {}          # pid -> (status, cpu_s)
        self.dying = []           # infos of killed sessions whose uid may still own processes
        self.spares = []          # (pid, client-end socket)
        self.free_uids = None if uid_base is None else list(range(uid_base + UID_BLOCK - 1, uid_base - 1, -1))
        self.uid_blocks = [uid_base] if uid_base is not None else []
        self.next_sid = 1
        self.scratch_base = None
        self.session_flags = {}
        self.cg = None            # the pool's memory cgroup (_cgroup.Pool), set by the launcher
        self.cg_dirs = {}         # pid of a spare or session process -> its cgroup
        self.cg_stale = []        # cgroups of ended sessions still busy (processes dying)
        self.expected, self.strict = [], False
        self.keep = []            # Python paths under /tmp & co., bound into each private /tmp

    # ---- start-up
    def _setup_pool(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # no handler => nothing in the pid ns can signal us
        try:
            prctl(PR_SET_DUMPABLE, 0)
        except OSError:
            pass
        try:
            prctl(PR_SET_CHILD_SUBREAPER, 1)        # orphans come back to us (when not pid 1)
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
                    mount("tmpfs", path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                          "size=4k,mode=755")
                elif os.path.exists(path):
                    mount("/dev/null", path, None, MS_BIND)
                    mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
                hidden.append(path)
            except OSError as e:
                self.notes[f"hide {path}"] = e.strerror
        p["hidden_paths"] = hidden

    def _warm_up(self):
        import importlib
        for name in WARM_MODULES:
            try:
                importlib.import_module(name)
            except Exception as e:                 # a missing optional module is not fatal
                self.notes[f"import {name}"] = repr(e)
        try:                                       # populate lazy imports and caches once
            import sympy
            x = sympy.Symbol("x")
            sympy.divisors(360), sympy.factorint(2 ** 20 - 1), sympy.isprime(97), sympy.nextprime(100)
            sympy.solve(x ** 2 - 2, x), sympy.simplify(sympy.sin(x) ** 2 + sympy.cos(x) ** 2)
            sympy.Rational(1, 3) + sympy.sqrt(2), sympy.binomial(10, 3), sympy.expand((x + 1) ** 3)
            sympy.factor(x ** 2 - 1), sympy.summation(x, (x, 1, 10)), sympy.Matrix([[1, 2], [3, 4]]).det()
            sympy.N(sympy.pi, 30), sympy.totient(36), sympy.gcd(12, 18), sympy.mod_inverse(3, 7)
            import numpy
            numpy.arange(10).sum(), numpy.linalg.det(numpy.eye(2))
            import mpmath
            mpmath.mpf(2).sqrt()
        except Exception as e:
            self.notes["warm-up"] = repr(e)
        for name in ("ast", "linecache", "traceback", "resource", "types", "codecs", "io", "shutil"):
            importlib.import_module(name)        # what the session worker itself uses
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
                for name, fn in (("mountns", self._probe_mount), ("netns", self._probe_net),
                                 ("ipcns", self._probe_ipc), ("uid", self._probe_uid)):
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
        self._probe_tmp = private_tmp(1, self.keep)   # what a session gets (the uid probe follows)

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
            os.chown(self._probe_tmp, u, u)            # as _assign does for a session
        os.setgroups([])
        os.setresgid(u, u, u)
        os.setresuid(u, u, u)
        bad = [p for p in python_paths()
               if not os.access(p, os.R_OK if os.path.isfile(p) else os.R_OK | os.X_OK)]
        if bad:
            raise OSError(errno.EACCES, f"an unprivileged uid cannot read the Python installation ({bad[0]})")

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
            "uid": f["uid"], "pidns": self.pool["pidns"],
            "netns": self.pool["netns"] or f["netns"], "netns_per_session": f["netns"],
            "mountns": f["mountns"], "private_tmp": f["mountns"], "ipcns": f["ipcns"] or self.pool["ipcns"],
            "proc": bool(self.pool.get("proc")), "hidden_paths": self.pool.get("hidden_paths", []),
            "uid_base": self.uid_base if f["uid"] else None,
            "memory_cgroup": self.cg is not None,
            "pool_memory_mb": int(self.opts.get("pool_memory_mb", 0)) if self.cg is not None else None,
        }
        self.protections = prot
        self.ctl.send(json.dumps({"ready": True, "protections": prot, "notes": self.notes,
                                  "expected": self.expected, "strict": self.strict,
                                  "cgroup": self.cg.path if self.cg is not None else None,
                                  "startup_s": time.monotonic() - self.started,
                                  "scratch_base": self.scratch_base, "pid": os.getpid()}).encode())
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
                reply = self._kill_session(msg["sid"], msg.get("why", "kill"), bool(msg.get("wait", True)))
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
                self._reply({"ok": True, "sessions": len(self.sessions), "spares": len(self.spares)})
            elif op == "shutdown":
                self._shutdown()
                self._reply({"ok": True})
                return
            else:
                self._reply({"ok": False, "error": f"unknown op {op!r}"})
            if not poller.poll(0):      # answer queued requests first, then refill the spares
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
                self.ctl.detach()                       # their fds are closed in _prepare
                for _, sock in self.spares:
                    sock.detach()
                worker = SessionWorker(child_end, self.session_flags, self.scratch_base,
                                       int(self.opts.get("scratch_mb", 256)))
                worker.debug = bool(self.opts.get("debug"))
                worker.main()
            except BaseException:
                if self.opts.get("debug"):
                    import traceback
                    traceback.print_exc()
            os._exit(0)
        child_end.close()
        if self.cg is not None:          # its own cgroup now; the cap is set when it is assigned
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

    def _alloc_uid(self):
        if not self.free_uids:
            fd, base = _lock_uid_block()       # all in use: take one more block of 256 uids
            if base is None:
                return None
            self.uid_blocks.append(base)
            self._kill_stale(base)
            self.free_uids.extend(range(base + UID_BLOCK - 1, base - 1, -1))
        return self.free_uids.pop()

    def _op_open(self, msg):
        uid = None
        if self.free_uids is not None:
            uid = self._alloc_uid()
            if uid is None:
                self._reply({"ok": False, "error": f"too many open sessions ({len(self.sessions)})"})
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
            assign = {"op": "assign", "sid": sid, "uid": uid, "limits": msg["limits"],
                      "seed": msg.get("seed", 0), "scratch": scratch, "oom_file": None}
            try:
                if self.cg is not None:
                    path = self.cg_dirs[pid]
                    self.cg.set_limit(path, msg["limits"].get("session_memory_mb", 2048))
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
            except (AttributeError, OSError):       # kernels before 5.3
                pidfd = None
            self.sessions[sid] = {"pid": pid, "uid": uid, "scratch": scratch}
            self.by_pid[pid] = sid
            fds = [sock.fileno()] + ([pidfd] if pidfd is not None else [])
            self._reply({"ok": True, "sid": sid, "pid": pid, "uid": uid, "pidfd": pidfd is not None}, fds)
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
            self._kill_tree(pid)
        if pid not in self.exited:
            for fn, target in ((os.killpg, pid), (os.kill, pid)):   # the session leads its group
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
            return {"ok": True, "kind": "unknown", "code": 0, "desc": "the process did not exit",
                    "cpu_s": cpu, "oom_kills": oom}
        kind, code, desc = describe_wait_status(status)
        return {"ok": True, "kind": kind, "code": code, "desc": desc, "cpu_s": cpu, "oom_kills": oom}

    def _finish_dying(self, block=False):
        """Free the uids of killed sessions whose processes are all gone; re-signal the others."""
        for attempt in range(400 if block else 1):
            self._reap()
            uids = {info["uid"] for info in self.dying if info["uid"] is not None}
            alive = self._alive_uids(uids) if uids else set()
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
        pids = [p for p in pids if p > 1]   # 0: a process outside our pid namespace; 1: ourselves
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        return bool(pids)

    @staticmethod
    def _descendants(root):
        """Live descendants of `root`, from the parent links in /proc."""
        children = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != b"Z":
                children.setdefault(int(fields[1]), []).append(int(name))
        found, todo = [], [root]
        while todo:
            for kid in children.get(todo.pop(), ()):
                found.append(kid)
                todo.append(kid)
        return found

    def _kill_tree(self, pid):
        """Without a uid of its own, a session is a child subreaper: every process it started,
        setsid() or not, stays in its subtree. Stop the subtree (so nothing forks any more),
        then kill it."""
        try:
            os.killpg(pid, signal.SIGSTOP)
        except OSError:
            try:
                os.kill(pid, signal.SIGSTOP)
            except OSError:
                return
        stopped = set()
        for _ in range(100):
            new = set(self._descendants(pid)) - stopped
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

    @staticmethod
    def _alive_uids(uids, pids=None):
        """Which of `uids` still own a live (non-zombie) process, according to /proc
        (the pids of those processes are appended to `pids` when given)."""
        want = {str(u).encode() for u in uids}
        alive = set()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status", "rb") as f:
                    data = f.read(2048)
            except OSError:
                continue
            state = None
            for line in data.split(b"\n"):
                if line.startswith(b"State:"):
                    state = line.split()[1:2]
                elif line.startswith(b"Uid:"):
                    hit = want.intersection(line.split()[1:4])
                    if hit and state != [b"Z"]:
                        alive.update(int(u) for u in hit)
                        if pids is not None:
                            pids.append(int(name))
                    break
        return alive

    def _kill_stale(self, base):
        """Without a pid namespace, processes of a crashed earlier pool may still run with the
        uids of the block we just locked: kill them before any session gets those uids."""
        if self.pool["pidns"]:
            return                      # the kernel killed them with that pool's namespace
        for _ in range(20):
            pids = []
            if not self._alive_uids(range(base, base + UID_BLOCK), pids):
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
        while True:                  # reap the helper and every orphan it leaves us
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
        deadline = time.monotonic() + 1.0         # reap what we killed rather than leave zombies
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


# --------------------------------------------------------------------------------------------
# session worker


class _Interrupted(BaseException):
    """Raised in the block's main thread when the client asks it to stop (wall time)."""


class _CpuExceeded(BaseException):
    """Raised in the block's main thread on SIGXCPU (RLIMIT_CPU soft limit)."""


class _OutputLimit(BaseException):
    """Raised by the capped writer once a block has printed more than max_output_mb."""


class CappedWriter:
    """A text stream that keeps the head and the tail of what is written, and counts the rest."""

    encoding = "utf-8"
    errors = "strict"
    newlines = None
    closed = False
    line_buffering = False

    def __init__(self, keep_chars, max_chars):
        self.head_cap = keep_chars // 2
        self.tail_cap = keep_chars - self.head_cap
        self.max_chars = max_chars
        self.head = []
        self.head_n = 0
        self.tail = []
        self.tail_n = 0
        self.total = 0
        self.exceeded = False
        self.buffer = _ByteAdapter(self)

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        if not n:
            return 0
        self.total += n
        start = 0                          # slices only, never a copy of a huge string
        room = self.head_cap - self.head_n
        if room > 0:
            part = s[:room]
            self.head.append(part)
            self.head_n += len(part)
            start = len(part)
        rest = n - start
        if rest > 0 and self.tail_cap:
            if rest >= self.tail_cap:
                self.tail = [s[n - self.tail_cap:]]
                self.tail_n = self.tail_cap
            else:
                self.tail.append(s[start:] if start else s)
                self.tail_n += rest
                if self.tail_n > 4 * self.tail_cap + 64:
                    joined = "".join(self.tail)[-self.tail_cap:]
                    self.tail, self.tail_n = [joined], len(joined)
        if self.total > self.max_chars:
            self.exceeded = True
            raise _OutputLimit()
        return n

    def getvalue(self):
        head = "".join(self.head)
        tail = "".join(self.tail)
        if self.total <= self.head_cap + self.tail_cap:
            return head + tail
        tail = tail[-self.tail_cap:] if self.tail_cap else ""
        cut = self.total - len(head) - len(tail)
        return f"{head}\n...[{cut} characters cut]...\n{tail}"

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def readable(self):
        return False

    def writable(self):
        return True

    def seekable(self):
        return False

    def fileno(self):
        import io
        raise io.UnsupportedOperation("the sandbox's stdout has no file descriptor")

    def close(self):
        pass


class _ByteAdapter:
    """`sys.stdout.buffer`: bytes are decoded as UTF-8, invalid sequences replaced."""

    closed = False

    def __init__(self, writer):
        import codecs
        self._writer = writer
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, b):
        self._writer.write(self._dec.decode(bytes(b)))
        return len(b)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True


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
        flags = (CLONE_NEWNS if f.get("mountns") else 0) | (CLONE_NEWNET if f.get("netns") else 0) \
            | (CLONE_NEWIPC if f.get("ipcns") else 0)
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
                mount("tmpfs", "/sys/fs/cgroup", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      "size=4k,mode=755")
        uid = msg["uid"]
        if self.flags.get("mountns"):
            want = int(lim.get("scratch_mb", self.scratch_mb))
            if self.scratch != "/" and want != self.scratch_mb:
                mount(None, self.scratch, None, MS_REMOUNT | MS_NOSUID | MS_NODEV, f"size={want}m")
            if self.scratch != "/":
                os.chown(self.scratch, uid if uid is not None else -1, uid if uid is not None else -1)
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
            prctl(PR_SET_CHILD_SUBREAPER, 1)   # keep every descendant in our subtree (see _kill_tree)
        setlim(resource.RLIMIT_NOFILE, max(int(lim["open_files"]), 8))
        setlim(resource.RLIMIT_FSIZE, int(lim["file_size_mb"]) * mb)
        setlim(resource.RLIMIT_CORE, 0)
        setlim(resource.RLIMIT_MSGQUEUE, 0)
        setlim(resource.RLIMIT_MEMLOCK, 0)
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)   # a uid change clears it
            prctl(PR_SET_DUMPABLE, 1)                 # /proc/self readable again; only our uid may ptrace
        try:
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        except OSError:
            pass
        if os.getppid() != self.server_pid:
            os._exit(0)                                # the server is already gone
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.scratch, "TMPDIR": self.scratch,
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8",
               "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0"), "MPLBACKEND": "Agg",
               "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMEXPR_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONDONTWRITEBYTECODE": "1"}
        os.environ.clear()
        os.environ.update(env)
        import types
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = __builtins__
        sys.modules["__main__"] = main
        self.ns = main.__dict__
        sys.argv = [""]
        sys.path = [p for p in sys.path if p]
        seed = int(msg.get("seed", 0))
        import random
        random.seed(seed)
        np = sys.modules.get("numpy")
        if np is not None:
            np.random.seed(seed % (2 ** 32))
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
                    send_msg(self.sock, {"id": msg.get("id"), "status": KILLED, "error": text,
                                         "stdout": "", "wall_s": 0.0, "cpu_s": 0.0})
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
        self._dumps, self._loads, self._exit, self._getpid = json.dumps, json.loads, os._exit, os.getpid
        self._oom_kills = self._oom_counter(self.oom_file, getattr(self, "oom_fd", None),
                                            os.open, os.pread, os.close)
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
        try:                       # a block may have replaced our handlers: put them back
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
            error = self._where(e, f"wall time limit {float(lim['wall_s']):g} s exceeded; the block "
                                   "was interrupted (the session's state is kept)")
        except _CpuExceeded as e:
            status = TIMEOUT
            error = self._where(e, f"CPU time limit {float(lim['cpu_s']):g} s exceeded; the block "
                                   "was interrupted (the session's state is kept)")
        except _OutputLimit:
            status = OUTPUT_LIMIT
            error = (f"output limit exceeded: the block printed more than "
                     f"{float(lim['max_output_mb']):g} MB and was stopped")
        except SystemExit as e:
            if e.code is None or e.code == 0:
                status = OK
            else:
                status, error = ERROR, f"SystemExit: {e.code!r}"[:500]
        except MemoryError as e:
            status = MEMORY
            error = self._format(e, "MemoryError: out of memory (limit "
                                    f"{int(lim['memory_mb'])} MB of address space)")
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
        if oom > oom0:                  # the kernel ended processes of ours: the cap, not the code
            status = MEMORY
            error = (memory_cap_text(lim, self.pool_memory_mb, f"ended {oom - oom0} of the session's "
                                     "processes") + ("\n" + error if error else ""))[:2500]
        try:
            out = writer.getvalue()
        except MemoryError:
            out = ""
        return {"status": status, "stdout": out, "error": error, "wall_s": wall,
                "cpu_s": max(self._cpu() - cpu0, 0.0), "cpu_total": self._cpu(),
                "chars": writer.total, "oom_kills": oom}

    @staticmethod
    def _user_frames(tb, head=2, tail=4):
        """(first `head` and last `tail` frames outside this file, number left out in between).

        Walks the traceback without formatting it: a RecursionError can have a million frames."""
        import traceback
        entries = [(f, n) for f, n in traceback.walk_tb(tb) if f.f_code.co_filename != __file__]
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


# --------------------------------------------------------------------------------------------

if __name__ == "__main__":
    launcher_main(int(sys.argv[1]))
