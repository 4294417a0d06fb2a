"""Does self-correction pay for itself? Reflexion and critique against simply more samples.

Runs the workflow (default model and config, plus bench/self_correction.yaml) in a run folder
on a GSM8K slice and the AIMO1 problems, then votes (the workflow's weighted vote, its weights)
over five sets of traces of the same problems:

  samples only   samples 0-3
  + reflexion    those, plus the repairs of the failed ones
  + critique     those, plus their critiques (from a run with reflexion off)
  + both         samples, repairs, and the critiques of samples and repairs (reflexion on)
  more samples   samples 0..m-1, m the smallest whose completion tokens reach each of the above

Tokens are completion tokens (what decoding costs); prompt tokens are given beside them (the
repair and critique prompts carry the whole previous solution).

    .venv/bin/python bench/self_correction.py [--gsm8k 40] [--workdir runs/self_correction]
    .venv/bin/python bench/self_correction.py --analyse-only   # the table from the files there

Steps, each a Snakemake run in the run folder (a rerun of the script resumes): samples 0-3;
their critiques with reflexion off (kept aside in critique_alone/); reflexion on (Snakemake
reruns only reflexion, critique and what follows); samples 4-7. The table is made from
whatever of these exists.
"""
import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from aimo.vote import vote_table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LINKED = ["Snakefile", "rules", "scripts", "schemas", "config.yaml", "envs", "resources"]
BENCH = yaml.safe_load((ROOT / "bench" / "self_correction.yaml").read_text())
SIZE = BENCH["samples"]["shard_size"]
BASE = 4  # samples per problem that get corrected
BASE_SHARDS = range(BASE // SIZE)
EXTRA_SHARDS = range(BASE // SIZE, BENCH["samples"]["n"] // SIZE)


def write_problems(workdir: Path, gsm8k: Path, n_gsm8k: int, aimo1: Path) -> None:
    """problems.jsonl: the first n_gsm8k GSM8K problems, then AIMO1's (ids prefixed)."""
    rows = [json.loads(line) for line in gsm8k.read_text().splitlines()[:n_gsm8k]]
    if len(rows) < n_gsm8k:
        sys.exit(f"{gsm8k} has {len(rows)} problems, fewer than --gsm8k {n_gsm8k}")
    rows = [{"id": r["id"], "problem": r["problem"], "answer": r["answer"]} for r in rows]
    with aimo1.open(encoding="utf-8") as f:
        rows += [{"id": f"aimo1-{r['id']}", "problem": r["problem"], "answer": int(r["answer"])}
                 for r in csv.DictReader(f)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path = workdir / "problems.jsonl"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def files(stage, shards):
    """A stage's trace shards and their executions."""
    return [f"results/{d}{stage}/shard-{s}.parquet" for d in ("", "execute/") for s in shards]


def snakemake(workdir: Path, reflexion: bool, critique: bool, targets: list[str]) -> None:
    stages = {"reflexion": {"enabled": reflexion}, "critique": {"enabled": critique}}
    (workdir / "stages.yaml").write_text(yaml.safe_dump(stages))
    cmd = [sys.executable, "-m", "snakemake", "--cores", "all", *targets, "--configfile",
           "config.yaml", str(ROOT / "bench" / "self_correction.yaml"), "stages.yaml"]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=workdir, check=True)


def run(workdir: Path) -> None:
    snakemake(workdir, False, False, files("generate", BASE_SHARDS))
    kept = workdir / "critique_alone"
    newest = max((workdir / f).stat().st_mtime for f in files("generate", BASE_SHARDS))
    alone = [kept / f.replace("/", "_") for f in files("critique", BASE_SHARDS)]
    if not all(p.exists() and p.stat().st_mtime > newest for p in alone):
        snakemake(workdir, False, True, files("critique", BASE_SHARDS))
        kept.mkdir(exist_ok=True)
        for f, p in zip(files("critique", BASE_SHARDS), alone):
            shutil.copy2(workdir / f, p)
    snakemake(workdir, True, True, files("reflexion", BASE_SHARDS) + files("critique", BASE_SHARDS))
    snakemake(workdir, True, True, files("generate", EXTRA_SHARDS))


def read(paths, samples=None) -> tuple[pa.Table, pa.Table] | None:
    """(traces, executions) of trace shards and their executions (lists of paths), only
    samples < `samples` if given; None when a file is missing."""
    half = len(paths) // 2
    if not all(Path(p).exists() for p in paths):
        return None
    traces = pa.concat_tables([pq.read_table(p) for p in paths[:half]], promote_options="permissive")
    execs = pa.concat_tables([pq.read_table(p) for p in paths[half:]], promote_options="permissive")
    if samples is not None:
        traces = traces.filter(pc.less(traces["sample"], samples))
        execs = execs.filter(pc.is_in(execs["trace_id"], traces["trace_id"]))
    return traces, execs


def score(workdir: Path, parts, answers: dict, weights: dict, critique_weight: float) -> dict:
    """Vote over the union of `parts`; accuracy and tokens per data set."""
    traces = pa.concat_tables([t for t, _ in parts], promote_options="permissive")
    execs = pa.concat_tables([e for _, e in parts], promote_options="permissive")
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(traces, f"{tmp}/t.parquet")
        pq.write_table(execs, f"{tmp}/e.parquet")
        votes = vote_table(workdir / "results" / "problems.parquet", [f"{tmp}/t.parquet"],
                           [f"{tmp}/e.parquet"], ["weighted"], weights, critique_weight)
    voted = dict(zip(votes["problem_id"].to_pylist(), votes["answer"].to_pylist()))
    out = {}
    for name in ("gsm8k", "aimo1"):
        pids = [p for p in answers if p.startswith(name)]
        rows = traces.filter(pc.starts_with(traces["problem_id"], name))
        out[name] = {
            "right": sum(voted.get(p) == answers[p] for p in pids), "problems": len(pids),
            "completion_tokens": pc.sum(rows["completion_tokens"]).as_py() or 0,
            "prompt_tokens": pc.sum(rows["prompt_tokens"]).as_py() or 0,
        }
    return out


def lineage(samples, repairs, critiques: dict, answers: dict) -> list[str]:
    """What the repairs and critiques did: how many, and which way the answers moved."""
    lines = []
    parents = {r["trace_id"]: r for r in samples[0].to_pylist()}
    if repairs:
        status = dict(zip(repairs[1]["trace_id"].to_pylist(), repairs[1]["exec_status"].to_pylist()))
        rows = repairs[0].to_pylist()
        parents |= {r["trace_id"]: r for r in rows}
        lines.append(
            f"- reflexion: {len(rows)} of {samples[0].num_rows} samples repaired; "
            f"{sum(r['answer_int'] is not None for r in rows)} repairs gave an answer, "
            f"{sum(status.get(r['trace_id']) == 'ok' for r in rows)} ran their code cleanly, "
            f"{sum(answers[r['problem_id']] == r['answer_int'] for r in rows)} are right")
    for label, part in critiques.items():
        if not part:
            continue
        rows = part[0].to_pylist()
        moved = {"wrong->right": 0, "right->wrong": 0, "wrong->wrong": 0}
        for r in rows:
            if r["changed"]:
                was = parents[r["parent_id"]]["answer_int"] == answers[r["problem_id"]]
                now = r["answer_int"] == answers[r["problem_id"]]
                moved[f"{'right' if was else 'wrong'}->{'right' if now else 'wrong'}"] += 1
        lines.append(
            f"- {label}: {len(rows)} critiques, {sum(bool(r['changed']) for r in rows)} changed the "
            f"answer ({', '.join(f'{k} {v}' for k, v in moved.items())}), "
            f"{sum(r['answer_int'] is None for r in rows)} gave none")
    return lines


def analyse(workdir: Path) -> str:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    weights, critique_weight = config["vote"]["weights"], config["critique"]["weight"]
    problems = pq.read_table(workdir / "results" / "problems.parquet")
    answers = dict(zip(problems["problem_id"].to_pylist(), problems["answer"].to_pylist()))
    at = lambda fs: [workdir / f for f in fs]  # noqa: E731
    samples = read(at(files("generate", BASE_SHARDS)))
    if samples is None:
        sys.exit(f"{workdir}: the samples (generate shards {list(BASE_SHARDS)}) are not there yet")
    repairs = read(at(files("reflexion", BASE_SHARDS)))
    alone = read([workdir / "critique_alone" / f.replace("/", "_")
                  for f in files("critique", BASE_SHARDS)])
    both = read(at(files("critique", BASE_SHARDS))) if repairs else None
    conditions = {f"samples only ({BASE})": [samples], "+ reflexion": [samples, repairs],
                  "+ critique": [samples, alone], "+ both": [samples, repairs, both]}
    results = {name: score(workdir, parts, answers, weights, critique_weight)
               for name, parts in conditions.items() if all(parts)}
    # more samples: the first m samples of every problem, as far as the shards go
    more, m = {}, 1
    while True:
        shards = [s for s in range(BENCH["samples"]["n"] // SIZE) if s * SIZE < m]
        part = read(at(files("generate", shards)), m)
        if part is None:
            break
        more[m] = score(workdir, [part], answers, weights, critique_weight)
        m += 1
        if m > BENCH["samples"]["n"]:
            break
    rows = []

    def row(label, res):
        cells = [label]
        for name in ("gsm8k", "aimo1"):
            r = res[name]
            cells += [f"{r['right']}/{r['problems']} ({r['right'] / max(r['problems'], 1):.0%})",
                      f"{r['completion_tokens'] / max(r['problems'], 1):.0f}",
                      f"{r['prompt_tokens'] / max(r['problems'], 1):.0f}"]
        rows.append("| " + " | ".join(cells) + " |")

    for name, res in results.items():
        row(name, res)
    for name in ("+ reflexion", "+ critique", "+ both"):
        if name not in results:
            continue
        # per data set, the fewest samples whose tokens reach the condition's
        res, label = {}, []
        for ds in ("gsm8k", "aimo1"):
            target = results[name][ds]["completion_tokens"]
            k = next((k for k in more if more[k][ds]["completion_tokens"] >= target), max(more))
            short = "" if more[k][ds]["completion_tokens"] >= target else ", all there are"
            res[ds] = more[k][ds]
            label.append(f"{ds} {k}{short}")
        row(f"more samples at the tokens of {name} ({'; '.join(label)})", res)
    for k in sorted({1, max(more)}):
        row(f"{k} sample{'s' if k > 1 else ''}", more[k])
    header = ("| traces voted | GSM8K right | completion tok/problem | prompt tok/problem | "
              "AIMO1 right | completion tok/problem | prompt tok/problem |\n"
              "|---|---|---|---|---|---|---|")
    notes = lineage(samples, repairs, {"critique alone": alone, "critique after reflexion": both},
                    answers)
    return "\n".join([header, *rows, "", *notes])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gsm8k", type=int, default=40, help="GSM8K problems (the first N)")
    ap.add_argument("--gsm8k-file", type=Path, default=SHARED / "gsm8k_dev.jsonl")
    ap.add_argument("--aimo1-file", type=Path, default=SHARED / "aimo1_train.csv")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "self_correction")
    ap.add_argument("--analyse-only", action="store_true", help="no workflow run: the table only")
    args = ap.parse_args()
    workdir = args.workdir.resolve()
    if not args.analyse_only:
        workdir.mkdir(parents=True, exist_ok=True)
        for name in LINKED:  # the workflow and the cached model, not copies
            link = workdir / name
            if not link.is_symlink():
                link.symlink_to(ROOT / name)
        write_problems(workdir, args.gsm8k_file, args.gsm8k, args.aimo1_file)
        run(workdir)
    table = analyse(workdir)
    (workdir / "self_correction.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
