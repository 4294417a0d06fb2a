"""The sandbox's protections wherever the project lives, and its memory caps.

An interpreter and a virtualenv under /tmp (a scratch clone, a CI checkout): sessions still run
as their own uid behind a private /tmp, can import and start the interpreter, and cannot touch
the run's files. A protection missing where the machine offers it is an error at start-up. A
setsid() daemon dies with its session. The memory caps: all processes of a session together,
and all sessions of a pool together; reaching one gives the block status `memory` and leaves
every other process alone. Tests fail where the machine offers what they check (root,
namespaces, a memory cgroup) and skip, saying why, only where it does not.
"""

import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from test_sandbox import (  # noqa: F401
    LIMITS,
    ROOT,
    assert_results_safe,
    check,
    need,
    not_offered,
    processes_with_arg,
    results_dirs,
    wait_gone,
)

from aimo.sandbox import MEMORY, OK, Limits, Sandbox, SandboxError

pytestmark = pytest.mark.needs("sandbox")

VER = f"python{sys.version_info.major}.{sys.version_info.minor}"
BIG = dict(vars(LIMITS), memory_mb=2048, wall_s=30.0, cpu_s=30.0)  # room for 700 MB per process


def link_tree(src, dst, skip=()):
    """Copy a directory tree as hard links where the file system allows (fast), else as copies."""
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        dirs[:] = [d for d in dirs if not (rel == "." and d in skip)]
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in files:
            s, d = os.path.join(root, name), os.path.join(dst, rel, name)
            if os.path.islink(s):
                os.symlink(os.readlink(s), d)
                continue
            try:
                os.link(s, d)
            except OSError:
                shutil.copy2(s, d)


def make_python_under_tmp(top):
    """An interpreter (binary and standard library) at `top`/python and a virtualenv made with it
    at `top`/venv holding sympy, mpmath and numpy: a Python installation that lives in /tmp."""
    py = os.path.join(top, "python")
    os.makedirs(os.path.join(py, "bin"))
    shutil.copy2(os.path.realpath(sys.executable), os.path.join(py, "bin", VER))
    link_tree(
        sysconfig.get_path("stdlib"),
        os.path.join(py, "lib", VER),
        skip=(
            "site-packages",
            "dist-packages",
            "test",
            "idlelib",
            "tkinter",
            "turtledemo",
            "lib2to3",
        ),
    )
    venv = os.path.join(top, "venv")
    subprocess.run([os.path.join(py, "bin", VER), "-m", "venv", "--without-pip", venv], check=True)
    site = os.path.join(venv, "lib", VER, "site-packages")
    here = sysconfig.get_path("purelib")
    for pkg in ("sympy", "mpmath", "numpy", "numpy.libs"):
        if os.path.isdir(os.path.join(here, pkg)):
            link_tree(os.path.join(here, pkg), os.path.join(site, pkg))
    return os.path.join(venv, "bin", "python")


@pytest.fixture(scope="module")
def tmp_python():
    top = tempfile.mkdtemp(prefix="aimo-tmp-python-", dir="/tmp")  # 0700, as `mktemp -d` makes
    try:
        python = make_python_under_tmp(top)
        out = subprocess.run(
            [python, "-c", "import sys, sympy; print(sys.prefix)"], capture_output=True, text=True
        )
        assert out.returncode == 0 and out.stdout.startswith(top), out
        yield python
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="module")
def tmp_sb(tmp_python):
    with Sandbox(LIMITS, workers=2, python=tmp_python) as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def sb():
    with Sandbox(LIMITS, workers=2) as sandbox:
        yield sandbox


def oom_kills_on_the_machine():
    for line in Path("/proc/vmstat").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------
# a Python installation under /tmp


def test_interpreter_and_venv_under_tmp(tmp_sb, tmp_python):
    need(tmp_sb, "uid")
    need(tmp_sb, "private_tmp")
    top = os.path.dirname(os.path.dirname(os.path.dirname(tmp_python)))
    marker = Path(tempfile.gettempdir()) / f"aimo-sandbox-marker-{os.getpid()}"
    marker.write_text("host")
    try:
        code = (
            "import os, sys, subprocess\n"
            "print(os.getuid() >= 60000, sys.executable)\n"
            "import sympy.physics.units, wave\n"  # not imported by the warm-up
            "print(sympy.physics.units.meter)\n"
            "p = subprocess.run([sys.executable, '-c', 'import sympy; print(sympy.isprime(97))'],\n"
            "                   capture_output=True, text=True)\n"
            "print(p.stdout.strip(), p.stderr[-300:])\n"
            f"print(os.listdir('/tmp'), os.path.exists({str(marker)!r}))\n"
            "try:\n    open(os.path.join(sys.prefix, 'planted.py'), 'w')\n"
            "except OSError as e:\n    print(type(e).__name__)\n"
        )
        r = tmp_sb.run(code, limits=Limits(**BIG))  # a second interpreter starts: slow when busy
        check(r, OK, within=40)
        assert r.stdout.splitlines() == [
            f"True {tmp_python}",
            "meter",
            "True ",
            f"[{os.path.basename(top)!r}] False",
            "OSError",
        ], r
    finally:
        marker.unlink()
    assert not os.path.exists(
        os.path.join(os.path.dirname(os.path.dirname(tmp_python)), "planted.py")
    )


def test_results_safe_from_an_interpreter_under_tmp(tmp_sb, results_dirs):
    need(tmp_sb, "uid")
    assert_results_safe(tmp_sb, results_dirs)


def test_missing_protection_is_an_error(tmp_python, caplog):
    """A virtualenv the sessions' uid cannot read: no separate uid is possible, which is an
    error where the machine offers root and namespaces, and a warning with accept_missing."""
    why = not_offered()
    if why is not None:
        pytest.skip(f"the machine itself lacks what the protections need: {why}")
    top = tempfile.mkdtemp(prefix="aimo-tmp-venv-", dir="/tmp")
    try:
        python = os.path.realpath(tmp_python)
        subprocess.run([python, "-m", "venv", "--without-pip", top], check=True)
        site = os.path.join(top, "lib", VER, "site-packages")
        os.chmod(site, 0o700)
        with pytest.raises(
            SandboxError, match=r"separate unprivileged uids.*aimo-tmp-venv-.*accept_missing"
        ):
            with Sandbox(LIMITS, workers=1, python=os.path.join(top, "bin", "python")):
                pass
        with caplog.at_level(logging.WARNING, logger="aimo.sandbox"):
            with Sandbox(
                Limits(**dict(vars(LIMITS), accept_missing=True)),
                workers=1,
                python=os.path.join(top, "bin", "python"),
            ) as sb2:
                assert sb2.protections["uid"] is False
                r = sb2.run("import os\nprint(os.getuid())")
                check(r, OK)
                assert r.stdout == "0\n"
        assert any(
            "running without: separate unprivileged uids" in rec.getMessage()
            for rec in caplog.records
        )
    finally:
        shutil.rmtree(top, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# nothing outlives its session

DAEMON = (
    "import os\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        os.execvp('sleep', ['sleep', '{marker}'])\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "print('started')\n"
)


@pytest.mark.parametrize("where", ["project", "tmp", "no uid"])
def test_setsid_daemon_dies_with_its_session(where, request):
    """A double-forked setsid() daemon is gone once its one-off session ends: closed by the
    sandbox, or ended by the code itself (os._exit) so that the daemon is re-parented away."""
    if where == "no uid":  # root without a uid of its own: the session's cgroup finds it
        why = not_offered("memory_cgroup")
        if why is not None:
            pytest.skip(f"without a uid the sweep needs a memory cgroup: {why}")
        sandbox = Sandbox(LIMITS, workers=1, drop_privileges=False)
    else:
        sandbox = request.getfixturevalue("sb" if where == "project" else "tmp_sb")
        need(sandbox, "uid")
    try:
        for k, end in enumerate(("", "import sys\nsys.stdout.flush()\nos._exit(0)\n")):
            marker = f"87{os.getpid() % 10000:04d}{k}"
            r = sandbox.run(DAEMON.format(marker=marker) + end)
            assert r.status in (OK, "killed"), r
            assert wait_gone(marker, timeout=3.0, find=processes_with_arg) == [], (
                "the daemon survived"
            )
    finally:
        if where == "no uid":
            sandbox.close()


# ---------------------------------------------------------------------------------------------
# memory caps


def kills_reported(r):
    m = re.search(
        r"the kernel's OOM killer (ended (\d+) of the session's processes|killed the session's process)",
        r.error,
    )
    assert m, r
    return int(m.group(2) or 1)


def test_session_memory_cap():
    """4 children touching 700 MB each under a 1 GiB session cap: the block gets `memory`, its
    session goes on, and nothing else is touched (the machine's OOM kills are the reported ones)."""
    with Sandbox(Limits(**dict(BIG, session_memory_mb=1024)), workers=2) as sb2:
        need(sb2, "memory_cgroup")
        server = sb2._server.proc.pid
        with sb2.session() as canary, sb2.session() as hog, sb2.session() as other:
            check(canary.run("token = 'kept'"), OK)
            check(hog.run("x = 1"), OK)
            before = oom_kills_on_the_machine()
            code = (
                "import os, time\nkids = []\n"
                "for _ in range(4):\n"
                "    pid = os.fork()\n"
                "    if pid == 0:\n"
                "        b = b'x' * (700 << 20)\n"
                "        time.sleep(1)\n"
                "        os._exit(0)\n"
                "    kids.append(pid)\n"
                "print(sorted(os.waitpid(k, 0)[1] for k in kids))\n"
            )
            r, o = sb2.run_round(
                [(hog, code), (other, "import time\ntime.sleep(2)\nprint(sum(range(10**6)))")]
            )
            check(r, MEMORY, within=40)
            assert "memory cap reached" in r.error and "1024 MB" in r.error, r
            check(o, OK)
            assert o.stdout == "499999500000\n"
            assert oom_kills_on_the_machine() - before == kills_reported(r)
            check(hog.run("print(x)"), OK)
            assert canary.run("print(token)").stdout == "kept\n"
            assert sb2._server.proc.poll() is None and sb2._server.proc.pid == server


def test_pool_memory_cap():
    """Two sessions of 900 MB each (under their own 1 GiB cap) in a pool capped at 1.5 GiB: one
    gets `memory`; the other session, the server and the pool's other sessions go on."""
    with Sandbox(
        Limits(**dict(BIG, session_memory_mb=1024, pool_memory_mb=1536)), workers=2
    ) as sb2:
        need(sb2, "memory_cgroup")
        server = sb2._server.proc.pid
        with sb2.session() as a, sb2.session() as b, sb2.session() as canary:
            check(canary.run("token = 'kept'"), OK)
            for s in (a, b):
                check(s.run("import time\ny = 2"), OK)
            before = oom_kills_on_the_machine()
            # each holds its 900 MB for 4 s: long enough to overlap on a busy machine
            hold = (
                "t0 = time.time()\nbuf = b'x' * (900 << 20)\nt1 = time.time()\ntime.sleep(4)\n"
                "del buf\nprint('held', t0, t1, time.time())"
            )
            rs = sb2.run_round([(a, hold), (b, hold)])
            statuses = sorted(r.status for r in rs)
            assert MEMORY in statuses and set(statuses) <= {OK, MEMORY}, rs
            for r in rs:
                check(r, r.status, within=40)
            assert oom_kills_on_the_machine() - before == sum(
                kills_reported(r) for r in rs if r.status == MEMORY
            )
            for s, r in zip((a, b), rs):
                after = s.run("print(y)")
                if r.status == OK:
                    assert after.stdout == "2\n", after
                else:  # restored at once, maybe while the pool was still at its cap: it may
                    check(after, OK, "error")  # have taken too long (the note says so)
                    assert after.stdout == "2\n" or "could not be restored" in after.error, after
            assert canary.run("print(token)").stdout == "kept\n"
            assert sb2._server.proc.poll() is None and sb2._server.proc.pid == server
