#!/usr/bin/env bash
# CI: the workflow on a Slurm cluster. Starts a one-node cluster on this machine (Debian's
# slurm-wlm and munge; munge with its own key and socket, Slurm's state and logs under a
# temporary folder, /etc/slurm/slurm.conf for the time of the run; no accounting database),
# runs the tiny configuration through Snakemake's Slurm executor with the project's profile
# (profiles/slurm), checks that every job ran as a Slurm job and completed, and that the
# outputs equal a local run's. The daemons are stopped by PID however this ends.
# Needs root (apt-get, daemons); run after `bash setup.sh --test`. Takes 7 to 20 minutes alone,
# a local run fewer with AIMO_LOCAL_RUN (below); .ci/run runs it beside the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=$root/.venv/bin/python
work=$(mktemp -d /tmp/aimo-slurm.XXXXXX)
# The default path: the jobstep executor drops SLURM_CONF from the environment of the srun it
# starts inside each job, so a config elsewhere would not reach it. One already there is kept
# aside and put back.
conf=/etc/slurm/slurm.conf
pids=()   # the daemons, in the order they were started
child=    # the Snakemake run in progress
started=$SECONDS

say() { echo "[slurm.sh $((SECONDS - started))s] $*"; }

cleanup() {
    local rc=$?
    if [ -n "$child" ]; then
        # Interrupted mid-run. SIGINT, as Ctrl-C: Snakemake cancels its Slurm jobs and stops
        # (on SIGTERM it would wait for them to finish). `timeout` passes it on.
        kill -INT "$child" 2>/dev/null || true
        for _ in $(seq 60); do kill -0 "$child" 2>/dev/null || break; sleep 0.5; done
        pkill -KILL -P "$child" 2>/dev/null || true
        kill -KILL "$child" 2>/dev/null || true
    fi
    if [ ${#pids[@]} -gt 0 ]; then
        # Jobs first (while slurmctld and slurmd still answer), then the daemons, newest first.
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        [ -z "$jobs" ] || scancel $jobs 2>/dev/null || true
        for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[i]}" 2>/dev/null || true; done
        for _ in $(seq 20); do
            alive=0
            for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
            [ $alive = 1 ] || break
            sleep 0.5
        done
        for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    fi
    if [ -e "$work/slurm.conf.orig" ]; then
        mv -f "$work/slurm.conf.orig" "$conf"
    elif [ -e "$work/slurm.conf.ours" ]; then
        rm -f "$conf"
    fi
    if [ $rc = 0 ]; then
        rm -rf "$work"
    else
        echo "slurm.sh failed (exit $rc); files kept in $work" >&2
        for log in munge/munged.log slurmctld.log slurmd.log; do
            [ -f "$work/$log" ] && { echo "--- $log (tail)" >&2; tail -n 20 "$work/$log" >&2; }
        done
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Packages: Slurm and munge from Debian, the executor plugin from the project's extra.
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi
if ! "$py" -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    # Into a folder of its own, first on the PYTHONPATH of this run and its jobs (sbatch
    # --export=ALL), not into .venv: the extra asks for pandas<3, which would replace the
    # environment's pandas under the tests running beside (.ci/run). Everything else at the
    # versions .venv has.
    say "installing the slurm extra for this run"
    "$py" -m pip freeze --exclude-editable | grep '==' | grep -v '^pandas==' >"$work/constraints.txt"
    extra=$("$py" -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))
print(*p['project']['optional-dependencies']['slurm'])")
    "$py" -m pip install -q --target "$work/slurm-extra" -c "$work/constraints.txt" $extra
    export PYTHONPATH="$work/slurm-extra${PYTHONPATH:+:$PYTHONPATH}"
fi

# 2. munge, with its own key and socket (the system's /etc/munge is left alone).
mkdir -m 700 "$work/munge" "$work/state" "$work/spool"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
munged --foreground --force --socket="$work/munge/socket" --key-file="$work/munge/munge.key" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" \
    --seed-file="$work/munge/munged.seed" >"$work/munged.out" 2>&1 &
pids+=($!)

# 3. slurm.conf: this machine as the one node, its CPUs and real memory; no accounting, so
# job states come from squeue, which keeps finished jobs for MinJobAge seconds (an hour: the
# whole run stays visible for the checks, and it is above the 3x first-check delay below
# which the plugin goes back to sacct).
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
mkdir -p "$(dirname "$conf")"
if [ -e "$conf" ]; then mv "$conf" "$work/slurm.conf.orig"; fi
touch "$work/slurm.conf.ours"
cat >"$conf" <<EOF
ClusterName=aimoci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -D -i >"$work/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D >"$work/slurmd.out" 2>&1 &
pids+=($!)
state=
for _ in $(seq 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || { echo "the node did not come up idle (state: '$state')" >&2; exit 1; }
setup_s=$((SECONDS - started))
say "cluster up: node $host, $cpus CPUs, $mem_mb MB, idle after ${setup_s}s of set-up"

# 4. The tiny run twice, each in a fresh copy of the workflow: on the cluster, and locally.
copy_workflow() {
    mkdir "$1"
    for name in Snakefile rules scripts schemas config.yaml config data profiles envs; do
        cp -r "$root/$name" "$1/"
    done
    cp "$root/tests/tiny/config.yaml" "$1/tiny.yaml"
}
tiny=(--configfile config.yaml tiny.yaml)

# snakemake_in DIR LOG ARGS...: Snakemake in DIR, output to LOG, stopped after 30 minutes or
# AIMO_SLURM_TIMEOUT_S seconds (SIGINT, so that it cancels its Slurm jobs; SIGKILL a minute
# later).
# In the background, so that a signal to this script stops it at once (bash runs a trap only
# once the foreground command is done); `timeout` passes the signal on to Snakemake.
snakemake_in() {
    local dir=$1 log=$2
    shift 2
    (cd "$dir" && exec timeout -s INT -k 60 "${AIMO_SLURM_TIMEOUT_S:-1800}" "$py" -m snakemake "$@") >"$log" 2>&1 &
    child=$!
    local rc=0
    wait "$child" || rc=$?
    child=
    return $rc
}

# The node has no GPU: the rules that hold one ask for none here (on a GPU cluster, leave
# this out). The status comes from squeue (no slurmdbd for sacct), first checked after 5 s.
copy_workflow "$work/slurm"
say "slurm run"
t0=$SECONDS
rc=0
snakemake_in "$work/slurm" "$work/slurm.log" --workflow-profile profiles/slurm "${tiny[@]}" \
    --set-resources generate:gpu=0 reflexion:gpu=0 critique:gpu=0 sft:gpu=0 \
    --slurm-status-command squeue --slurm-init-seconds-before-status-checks 5 \
    --slurm-no-account --slurm-keep-successful-logs || rc=$?
slurm_s=$((SECONDS - t0))
if [ $rc != 0 ]; then
    tail -n 60 "$work/slurm.log" >&2
    # A killed run leaves its lock behind (timeout: 124, or 137 after SIGKILL).
    (cd "$work/slurm" && "$py" -m snakemake --workflow-profile profiles/slurm "${tiny[@]}" \
        --unlock >/dev/null 2>&1) || true
    echo "the Slurm run failed (exit $rc$([ $rc = 124 ] || [ $rc = 137 ] && echo ': timed out'))" >&2
    exit 1
fi
squeue -h --states=all -o '%i|%T|%k' >"$work/squeue.txt"

# The local run: AIMO_LOCAL_RUN, where .ci/run's tests kept theirs (the same workflow, config and
# cores: tests/test_pipeline.py's tiny run, its results/ and log, local.log written last), or
# made here. With AIMO_LOCAL_RUN_DONE (a file .ci/run makes when its tests are over), the tests
# run beside this script: wait for their run until then.
if [ -n "${AIMO_LOCAL_RUN:-}" ] && [ -n "${AIMO_LOCAL_RUN_DONE:-}" ]; then
    say "waiting for the tests' local run in $AIMO_LOCAL_RUN"
    while [ ! -f "$AIMO_LOCAL_RUN/local.log" ] && [ ! -e "$AIMO_LOCAL_RUN_DONE" ]; do sleep 2; done
fi
t0=$SECONDS
if [ -n "${AIMO_LOCAL_RUN:-}" ] && [ -d "$AIMO_LOCAL_RUN/results" ] && [ -f "$AIMO_LOCAL_RUN/local.log" ]; then
    say "local run: the tests' own, from $AIMO_LOCAL_RUN"
    mkdir "$work/local"
    cp -r "$AIMO_LOCAL_RUN/results" "$work/local/"
    cp "$AIMO_LOCAL_RUN/local.log" "$work/local.log"
else
    copy_workflow "$work/local"
    say "local run"
    if ! snakemake_in "$work/local" "$work/local.log" --cores all "${tiny[@]}"; then
        tail -n 40 "$work/local.log" >&2
        exit 1
    fi
fi
local_s=$((SECONDS - t0))

# 5. Checks: every job of the local run ran as a completed Slurm job, and the outputs agree.
"$py" - "$work" <<'EOF'
import collections
import re
import sys
from pathlib import Path

import pyarrow.parquet as pq

work = Path(sys.argv[1])
local, slurm = work / "local", work / "slurm"
errors = []

# Jobs: the rules the local run ran (all but the target rule `all`), against Slurm's record.
ran_locally = collections.Counter(
    re.findall(r"^(?:local)?rule (\w+):$", (work / "local.log").read_text(), re.M))
del ran_locally["all"]
log = (work / "slurm.log").read_text()
submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
queue = {}
for line in (work / "squeue.txt").read_text().splitlines():
    job_id, state, comment = line.split("|", 2)
    queue[job_id] = (state, comment)
on_slurm = collections.Counter()
for job, slurm_id in submitted.items():
    state, comment = queue.get(slurm_id, ("MISSING", ""))
    if state != "COMPLETED":
        errors.append(f"Snakemake job {job}: Slurm job {slurm_id} is {state}")
    rule = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment)
    on_slurm[rule.group(1) if rule else comment] += 1
    if not list((slurm / ".snakemake/slurm_logs").rglob(f"{slurm_id}.log")):
        errors.append(f"Slurm job {slurm_id} left no log")
if on_slurm != ran_locally:
    errors.append(f"jobs per rule: locally {dict(ran_locally)}, on Slurm {dict(on_slurm)}")
print(f"{len(submitted)} jobs ran as Slurm jobs, all COMPLETED: {dict(sorted(on_slurm.items()))}")


# Outputs: every table of results/, in full, but the timings (aimo.schemas.TIMING) and file
# metadata. The guarantee (README, "Reproducibility"): the deterministic schedule gives the
# same batches in both runs, and vLLM on this CPU the same tokens for the same batches.
from aimo.tables import comparable_rows

tables = sorted(
    str(p.relative_to(local)) for p in (local / "results").rglob("*") if p.suffix in (".parquet", ".csv")
)
theirs = sorted(
    str(p.relative_to(slurm)) for p in (slurm / "results").rglob("*") if p.suffix in (".parquet", ".csv")
)
if tables != theirs:
    errors.append(f"tables: locally {tables}, on Slurm {theirs}")
for rel in tables:
    a, b = local / rel, slurm / rel
    if not b.exists():
        continue
    if rel.endswith(".csv"):
        same = a.read_bytes() == b.read_bytes()
    else:
        mine, other = comparable_rows(a), comparable_rows(b)
        same = mine == other
        if not same and len(mine) == len(other):
            for x, y in zip(mine, other):
                cols = [c for c in x if x[c] != y.get(c)]
                if cols:
                    print(f"    first differing row of {rel}: {x.get('trace_id', '')} {cols}")
                    break
    print(f"  {'same' if same else 'DIFFERENT'}: {rel}")
    if not same:
        errors.append(f"{rel} differs between the local and the Slurm run")
if errors:
    sys.exit("\n".join(errors))
EOF
say "done: set-up ${setup_s}s, local run ${local_s}s, Slurm run ${slurm_s}s"
