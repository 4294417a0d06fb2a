"""Sandbox latency and throughput, against a fresh `python -c` per block as the baseline.

    python bench/sandbox_latency.py [--runs 40] [--baseline-runs 10] [--seconds 5] [--workers 2]

Prints the median latency of `import sympy; print(sum(sympy.divisors(360)))` run by a fresh
interpreter and by the pool (a fresh session each time, and a block in a warm session), their
ratio, executions per second of trivial code (warm sessions and fresh sessions, `workers` at
once), the server start-up time, and the memory of an idle session.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimo.sandbox import Limits, Sandbox  # noqa: E402

SNIPPET = "import sympy\nprint(sum(sympy.divisors(360)))"


def baseline(runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", SNIPPET], capture_output=True, text=True, check=True
        )
        times.append(time.perf_counter() - t)
        assert out.stdout.strip() == "1170"
    return times


def pool_fresh(sb, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = sb.run(SNIPPET)
        times.append(time.perf_counter() - t)
        assert r.stdout.strip() == "1170", r
        time.sleep(0.02)  # as in real use, blocks do not arrive back to back
    return times


def server_tree_cpu(sb):
    """CPU seconds of the fork server plus its reaped children (sessions), from /proc."""
    launcher = sb._server.proc.pid
    for d in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(launcher):
            return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return None


def pool_warm(sb, runs):
    s = sb.session()
    s.run("import sympy")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        r = s.run("print(sum(sympy.divisors(360)))")
        times.append(time.perf_counter() - t)
        assert r.stdout.strip() == "1170", r
    s.close()
    return times


def throughput_warm(sb, seconds, sessions):
    ss = [sb.session() for _ in range(sessions)]
    sb.run_round([(s, "x = 0") for s in ss])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rs = sb.run_round([(s, "x += 1") for s in ss])
        assert all(r.status == "ok" for r in rs), rs
        n += len(rs)
    rate = n / (time.perf_counter() - t0)
    for s in ss:
        s.close()
    return rate


def throughput_fresh(sb, seconds, sessions):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ss = [sb.session() for _ in range(sessions)]
        rs = sb.run_round([(s, "print(1)") for s in ss])
        assert all(r.status == "ok" for r in rs), rs
        for s in ss:
            s.close()
        n += len(rs)
    return n / (time.perf_counter() - t0)


def idle_session_memory(sb):
    """(PSS, private) MiB of one idle session process after a trivial block; None without uids."""
    s = sb.session()
    s.run("import sympy\nx = sum(sympy.divisors(360))")
    uid, found = s.uid, None
    if uid is not None:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                status = Path(f"/proc/{d}/status").read_text()
                if f"\nUid:\t{uid}\t" not in status:
                    continue
                fields = {}
                for line in Path(f"/proc/{d}/smaps_rollup").read_text().splitlines()[1:]:
                    k, v = line.split(":", 1)
                    fields[k] = int(v.split()[0])
                found = (
                    fields["Pss"] / 1024,
                    (fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024,
                )
                break
            except (OSError, KeyError, ValueError):
                continue
    s.close()
    return found


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--baseline-runs", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    base = baseline(args.baseline_runs)
    t = time.perf_counter()
    with Sandbox(Limits(), workers=args.workers) as sb:
        prot = sb.protections
        startup = time.perf_counter() - t
        pool_fresh(sb, 3)  # warm-up
        time.sleep(0.5)
        cpu0, me0 = server_tree_cpu(sb), time.process_time()
        fresh = pool_fresh(sb, args.runs)
        time.sleep(1.0)  # let the last sessions be killed and reaped
        cpu1, me1 = server_tree_cpu(sb), time.process_time()
        cpu_fresh = (cpu1 - cpu0) / args.runs if cpu0 is not None and cpu1 is not None else None
        client_fresh = (me1 - me0) / args.runs
        warm = pool_warm(sb, args.runs)
        tp_warm = throughput_warm(sb, args.seconds, sessions=4 * args.workers)
        tp_fresh = throughput_fresh(sb, args.seconds, sessions=4 * args.workers)
        mem = idle_session_memory(sb)
    load = os.getloadavg()
    res = {
        "baseline_median_ms": statistics.median(base) * 1e3,
        "pool_fresh_session_median_ms": statistics.median(fresh) * 1e3,
        "pool_fresh_session_p90_ms": sorted(fresh)[int(0.9 * (len(fresh) - 1))] * 1e3,
        "pool_warm_session_median_ms": statistics.median(warm) * 1e3,
        "ratio_baseline_over_fresh": statistics.median(base) / statistics.median(fresh),
        "trivial_exec_per_s_warm_sessions": tp_warm,
        "trivial_exec_per_s_fresh_sessions": tp_fresh,
        "cpu_ms_per_fresh_session_server_side": cpu_fresh * 1e3 if cpu_fresh is not None else None,
        "cpu_ms_per_fresh_session_client": client_fresh * 1e3,
        "server_startup_s": startup,
        "idle_session_pss_mib": mem[0] if mem else None,
        "idle_session_private_mib": mem[1] if mem else None,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "loadavg_1m_after": load[0],
        "protections": {k: v for k, v in prot.items() if isinstance(v, bool)},
    }
    print(
        f"baseline (fresh `python -c`, sympy snippet): median {res['baseline_median_ms']:.1f} ms"
        f" over {len(base)} runs"
    )
    print(
        f"pool, fresh session per run:                median {res['pool_fresh_session_median_ms']:.2f} ms"
        f" (p90 {res['pool_fresh_session_p90_ms']:.2f} ms) over {len(fresh)} runs"
    )
    print(
        f"pool, block in a warm session:              median {res['pool_warm_session_median_ms']:.2f} ms"
    )
    print(f"ratio baseline / fresh session:             {res['ratio_baseline_over_fresh']:.1f}x")
    print(f"trivial code, {args.workers} workers, warm sessions:    {tp_warm:.0f} executions/s")
    print(f"trivial code, {args.workers} workers, fresh sessions:   {tp_fresh:.0f} executions/s")
    if cpu_fresh is not None:
        print(
            f"CPU per fresh session: {cpu_fresh * 1e3:.1f} ms in the server and the session process "
            f"(fork, namespaces, run, tear-down), {client_fresh * 1e3:.2f} ms in the client"
        )
    print(
        f"server start-up: {startup:.2f} s; idle session: "
        + (f"PSS {mem[0]:.1f} MiB, private {mem[1]:.1f} MiB" if mem else "n/a")
    )
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} after the run; "
        f"protections: {', '.join(k for k, v in res['protections'].items() if v)}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
