"""The sandbox's server (standard library only), run by path as a folder: this file is the launcher.

The client (``aimo.sandbox.client``) runs this folder by path with ``python -s -P``, so the
server never imports the ``aimo`` package or anything of the caller's process::

    python -s -P aimo/sandbox/_server <control fd>     (the options follow as the first message)

Python puts the folder (and with -s -P nothing else of the caller's) on ``sys.path``, which lets
the imports below find their siblings; the folder is then taken off ``sys.path`` again, so the
fork server's and the sessions' ``sys.path`` hold only the interpreter's own entries. The rooms:

    __main__.py         the launcher: namespaces, the pool's memory cgroup, then the fork server
    sbx_fork_server.py  the fork server (ForkServer): the control loop, spares, sessions' ends
    sbx_startup.py      the fork server's start-up (PoolStartup): pool mounts, warm-up, probes
    sbx_uids.py         the uid-block lock and the uid bookkeeping (UidBook)
    sbx_warm.py         the warm-up: WARM_MODULES, imported once before any fork
    sbx_session.py      the session worker (SessionWorker)
    sbx_output.py       a block's output (CappedWriter) and the exceptions that stop a block
    sbx_linux.py        libc calls, namespaces, mounts, capabilities, /proc
    sbx_protocol.py     statuses, message framing, the environment (also imported by the client)

(the ``sbx_`` prefix keeps them from shadowing a module a session's code imports). Process tree
(when root and the kernel allows namespaces)::

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

import errno
import json
import os
import signal
import socket
import sys

from sbx_fork_server import ForkServer
from sbx_linux import (
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUTS,
    MS_PRIVATE,
    MS_REC,
    PR_SET_PDEATHSIG,
    mount,
    prctl,
    set_oom_score_adj,
    unshare,
)
from sbx_uids import lock_uid_block

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == HERE:
    del sys.path[0]  # every sibling is imported by now (see above)

_cgroup_mod = None


def cgroup_module():
    """aimo/sandbox/_cgroup.py, loaded by path (the server never imports the aimo package)."""
    global _cgroup_mod
    if _cgroup_mod is None:
        import importlib.util

        path = os.path.join(os.path.dirname(HERE), "_cgroup.py")
        spec = importlib.util.spec_from_file_location("_aimo_sandbox_cgroup", path)
        _cgroup_mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_cgroup_mod)
    return _cgroup_mod


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
        lock_fd, uid_base = lock_uid_block()
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
            # pool_memory_mb: the client's Limits, always sent
            cg = cgroup_module().Pool.create(opts["pool_memory_mb"], f"aimo-sandbox-{os.getpid()}")
            cg.move(cg.server)  # the fork server and all it forks start below the pool's cap
        except OSError as e:
            notes["memory_cgroup"] = e.strerror or str(e)
            cg = None
            cg_offered = cg_offered and not isinstance(e, cgroup_module().NoPlace)
    else:
        notes["memory_cgroup"] = "not root"
    pool = {"pidns": False, "netns": False, "mountns": False, "utsns": False, "ipcns": False}
    if use_ns:
        wanted = [
            ("pidns", CLONE_NEWPID),
            ("netns", CLONE_NEWNET),
            ("mountns", CLONE_NEWNS),
            ("utsns", CLONE_NEWUTS),
            ("ipcns", CLONE_NEWIPC),
        ]
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
    expected = (["uid"] if root and opts.get("drop_privileges", True) else []) + (
        ["memory_cgroup"] if cg_offered else []
    )
    strict = use_ns and all(unshared.values())
    if strict:
        expected += ["pidns", "netns", "mountns", "private_tmp", "ipcns", "proc"] + (
            ["netns_per_session"] if opts.get("net_per_session", True) else []
        )
    pid = os.fork()
    if pid == 0:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            server = ForkServer(
                ctl_fd, opts, uid_base if lock_fd is not None else None, pool, notes
            )
            server.cg, server.expected, server.strict = cg, expected, strict
            server.serve()
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(70)
        os._exit(0)
    os.close(ctl_fd)  # only the fork server holds the server end now
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
    if cg is not None:  # leave the pool's cgroup and remove it (and what sessions left)
        try:
            cg.move(cg_home)
        except OSError:
            pass
        cg.remove_all()
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    launcher_main(int(sys.argv[1]))
