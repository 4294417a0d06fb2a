"""Does self-correction pay for itself? Reflexion and critique against simply more samples.

Runs the workflow (default model and config, plus bench/self_correction.yaml) in a run folder
on a problem set (default: the first 40 GSM8K problems of ../shared/data), then votes (the
workflow's weighted vote, with its weights; the logprob vote beside it) over these sets of traces
of the same problems:

  samples only   samples 0..base-1 (--base, 4)
  + reflexion    those, plus the repairs of the failed ones
  + critique     those, plus the critiques of those samples
  + both         samples, repairs, and every critique (of samples and of repairs)
  ..., replacing the same, each critique with an answer voting instead of the trace it reviews
                 (config vote.critique_replace) rather than beside it
  more samples   samples 0..m-1, m the smallest whose completion tokens reach each of the above

Tokens are completion tokens (what decoding costs); prompt tokens are given beside them (the
repair and critique prompts carry the whole previous solution). Each row also says which
problems moved against the samples alone (+gained -lost: on a few dozen problems a total that
differs by one or two is noise) and on how many problems some voted trace is right (what a
perfect vote would get).

    .venv/bin/python bench/self_correction.py                  # GSM8K, first 40 problems
    .venv/bin/python bench/self_correction.py --problems ../shared/data/aimo1_train.csv --limit 0
    .venv/bin/python bench/self_correction.py --analyse-only   # the table from what is there
    .venv/bin/python bench/self_correction.py --config config/h100.yaml   # the plan's setting

Each problem set gets its own run folder (runs/self_correction/<file name>), so that adding one
leaves the others' shards valid.

The critiques come from one workflow run with both stages on, as the default config has them:
critique picks its traces (the top answers per problem) from samples and repairs together, so
"+ critique" is the critiques of samples chosen with the repairs in view. (A separate run with
reflexion off would choose almost the same ones: few traces need repair; it would cost a second
critique pass, the most expensive stage here.)

Steps, each a Snakemake run in the run folder (a rerun of the script resumes): the samples,
their repairs, the critiques, the shards of more samples. The table is made from whatever of
these exists, so a run cut short still gives its first rows.
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from aimo.tables import write_text
from aimo.vote import VoteSettings, vote_table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LINKED = ["Snakefile", "rules", "scripts", "schemas", "envs", "resources"]
BENCH = yaml.safe_load((ROOT / "bench" / "self_correction.yaml").read_text())
SIZE = BENCH["samples"]["shard_size"]
N_SHARDS = BENCH["samples"]["n"] // SIZE


def write_problems(workdir: Path, source: Path, limit: int) -> None:
    """problems.jsonl: the first `limit` problems of `source` (CSV or JSONL with id, problem,
    answer; 0: all of them)."""
    if source.suffix == ".csv":
        with source.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    if limit:
        if len(rows) < limit:
            sys.exit(f"{source} has {len(rows)} problems, fewer than --limit {limit}")
        rows = rows[:limit]
    text = "".join(
        json.dumps({"id": r["id"], "problem": r["problem"], "answer": int(r["answer"])}) + "\n"
        for r in rows
    )
    path = workdir / "problems.jsonl"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def files(stage, shards):
    """A stage's trace shards and their executions."""
    return [f"results/{d}{stage}/shard-{s}.parquet" for d in ("", "execute/") for s in shards]


def snakemake(workdir: Path, reflexion: bool, critique: bool, targets: list[str]) -> None:
    stages = {"reflexion": {"enabled": reflexion}, "critique": {"enabled": critique}}
    (workdir / "stages.yaml").write_text(yaml.safe_dump(stages))
    # Only changed settings or inputs rerun a step: a resumed benchmark keeps its shards across
    # commits that leave what they compute alone, and across a rebuilt model (the same bytes).
    # Delete the run folder to start over.
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "all",
        *targets,
        "--rerun-triggers",
        "params",
        "input",
        "--configfile",
        "config.yaml",
        str(ROOT / "bench" / "self_correction.yaml"),
        "stages.yaml",
    ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=workdir, check=True)


def run(workdir: Path, base: int, total: int) -> None:
    shards = range(base // SIZE)
    snakemake(workdir, False, False, files("generate", shards))
    snakemake(workdir, True, False, files("reflexion", shards))
    snakemake(workdir, True, True, files("critique", shards))
    snakemake(workdir, True, True, files("generate", range(base // SIZE, total // SIZE)))


def read(paths, samples=None) -> tuple[pa.Table, pa.Table] | None:
    """(traces, executions) of trace shards and their executions (lists of paths), only
    samples < `samples` if given; None when a file is missing."""
    half = len(paths) // 2
    if not all(Path(p).exists() for p in paths):
        return None
    traces = pa.concat_tables(
        [pq.read_table(p) for p in paths[:half]], promote_options="permissive"
    )
    execs = pa.concat_tables([pq.read_table(p) for p in paths[half:]], promote_options="permissive")
    if samples is not None:
        traces = traces.filter(pc.less(traces["sample"], samples))
        execs = execs.filter(pc.is_in(execs["trace_id"], traces["trace_id"]))
    return traces, execs


def score(
    workdir: Path, parts, answers: dict, settings: VoteSettings, replaces: bool = False
) -> dict:
    """Vote over the union of `parts` (`replaces`: a critique takes its parent's vote): the
    problems the vote gets right, those where some trace is right, and tokens."""
    traces = pa.concat_tables([t for t, _ in parts], promote_options="permissive")
    execs = pa.concat_tables([e for _, e in parts], promote_options="permissive")
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(traces, f"{tmp}/t.parquet")
        pq.write_table(execs, f"{tmp}/e.parquet")
        votes = vote_table(
            workdir / "results" / "problems.parquet",
            [f"{tmp}/t.parquet"],
            [f"{tmp}/e.parquet"],
            settings.replace(critique_replace=replaces),
            strategies=["weighted", "logprob"],
        ).to_pylist()
    voted = {(v["strategy"], v["problem_id"]): v["answer"] for v in votes}
    given = set(zip(traces["problem_id"].to_pylist(), traces["answer_int"].to_pylist()))
    return {
        "right": {p for p, a in answers.items() if voted.get(("weighted", p)) == a},
        "logprob_right": sum(voted.get(("logprob", p)) == a for p, a in answers.items()),
        "some_right": sum((p, a) in given for p, a in answers.items()),
        "completion_tokens": pc.sum(traces["completion_tokens"]).as_py() or 0,
        "prompt_tokens": pc.sum(traces["prompt_tokens"]).as_py() or 0,
    }


def lineage(samples, repairs, critiques: dict, answers: dict) -> list[str]:
    """What the repairs and critiques did: how many, and which way the answers moved."""
    lines = []
    parents = {r["trace_id"]: r for r in samples[0].to_pylist()}
    if repairs:
        status = dict(
            zip(repairs[1]["trace_id"].to_pylist(), repairs[1]["exec_status"].to_pylist())
        )
        rows = repairs[0].to_pylist()
        parents |= {r["trace_id"]: r for r in rows}
        lines.append(
            f"- reflexion: {len(rows)} of {samples[0].num_rows} samples repaired; "
            f"{sum(r['answer_int'] is not None for r in rows)} repairs gave an answer, "
            f"{sum(status.get(r['trace_id']) == 'ok' for r in rows)} ran their code cleanly, "
            f"{sum(answers[r['problem_id']] == r['answer_int'] for r in rows)} are right"
        )
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
            f"{sum(r['answer_int'] is None for r in rows)} gave none"
        )
    return lines


def analyse(workdir: Path, base: int) -> str:
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    settings = VoteSettings.of(config["vote"])
    problems = pq.read_table(workdir / "results" / "problems.parquet")
    answers = dict(zip(problems["problem_id"].to_pylist(), problems["answer"].to_pylist()))
    at = lambda fs: [workdir / f for f in fs]  # noqa: E731
    shards = range(base // SIZE)
    samples = read(at(files("generate", shards)))
    if samples is None:
        sys.exit(f"{workdir}: the samples (generate shards {list(shards)}) are not there yet")
    repairs = read(at(files("reflexion", shards)))
    both = read(at(files("critique", shards))) if repairs else None
    alone = None
    if both:  # the critiques of samples (not of repairs)
        keep = pc.is_in(both[0]["parent_id"], samples[0]["trace_id"])
        traces = both[0].filter(keep)
        alone = traces, both[1].filter(pc.is_in(both[1]["trace_id"], traces["trace_id"]))
    # (traces, whether a critique replaces its parent's vote: config vote.critique_replace)
    conditions = {
        f"samples only ({base})": ([samples], False),
        "+ reflexion": ([samples, repairs], False),
        "+ critique": ([samples, alone], False),
        "+ critique, replacing": ([samples, alone], True),
        "+ both": ([samples, repairs, both], False),
        "+ both, replacing": ([samples, repairs, both], True),
    }
    results = {
        name: score(workdir, parts, answers, settings, replaces)
        for name, (parts, replaces) in conditions.items()
        if all(parts)
    }
    # more samples: the first m samples of every problem, as far as the shards go
    more, m = {}, 1
    while True:
        part = read(at(files("generate", [s for s in range(N_SHARDS) if s * SIZE < m])), m)
        if part is None:
            break
        more[m] = score(workdir, [part], answers, settings)
        m += 1
        if m > BENCH["samples"]["n"]:
            break
    n = len(answers)
    reference = results[f"samples only ({base})"]["right"]
    rows = []

    def row(label, r):
        # paired against the samples alone: with a few dozen problems a difference of one or
        # two is noise, and the problems that moved say more than the totals
        right = len(r["right"])
        rows.append(
            f"| {label} | {right}/{n} ({right / n:.0%}) | +{len(r['right'] - reference)} "
            f"-{len(reference - r['right'])} | {r['logprob_right']}/{n} | "
            f"{r['some_right']}/{n} | "
            f"{r['completion_tokens'] / n:.0f} | {r['prompt_tokens'] / n:.0f} |"
        )

    for name, res in results.items():
        row(name, res)
    # the first m samples, for every m there is; each marked with the corrections whose
    # completion tokens it is the first to reach
    reach = {}
    for name in ("+ reflexion", "+ critique", "+ both"):
        if name in results:
            target = results[name]["completion_tokens"]
            k = next((k for k in more if more[k]["completion_tokens"] >= target), None)
            reach.setdefault(k, []).append(name)
    for k in more:
        label = f"{k} sample{'s' if k > 1 else ''}"
        if k in reach:
            label += f" (the tokens of {', '.join(reach[k])})"
        row(label, more[k])
    if None in reach:
        rows.append(
            f"| more samples than there are reach the tokens of {', '.join(reach[None])} "
            "| | | | | | |"
        )
    header = (
        "| traces voted | right | vs samples only | right, logprob vote | some trace right "
        "| completion tokens/problem | prompt tokens/problem |\n|---|---|---|---|---|---|---|"
    )
    notes = lineage(
        samples, repairs, {"critiques of samples": alone, "all critiques": both}, answers
    )
    return "\n".join([f"{workdir.name}: {n} problems", "", header, *rows, "", *notes])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--problems",
        type=Path,
        default=SHARED / "gsm8k_dev.jsonl",
        help="CSV or JSONL with id, problem, answer",
    )
    ap.add_argument("--limit", type=int, default=40, help="the first N problems; 0: all")
    ap.add_argument(
        "--base",
        type=int,
        default=4,
        help="samples per problem that get corrected (a multiple of the shard size)",
    )
    ap.add_argument(
        "--samples",
        type=int,
        default=BENCH["samples"]["n"],
        help="samples per problem in all, for the more-samples rows",
    )
    ap.add_argument("--workdir", type=Path, help="default: runs/self_correction/<problems' name>")
    ap.add_argument(
        "--config",
        type=Path,
        help="the workflow config under the benchmark's (default: the run folder's, "
        "else config.yaml)",
    )
    ap.add_argument("--analyse-only", action="store_true", help="no workflow run: the table only")
    args = ap.parse_args()
    workdir = (args.workdir or ROOT / "runs" / "self_correction" / args.problems.stem).resolve()
    config = args.config
    if config is None:  # keep the folder's own, so that a resumed run or a table uses it
        linked = workdir / "config.yaml"
        config = linked.resolve() if linked.is_file() else ROOT / "config.yaml"
    if not config.is_file():
        ap.error(f"--config {config}: no such file")
    for name in ("base", "samples"):
        value = getattr(args, name)
        if value % SIZE or not 0 < value <= BENCH["samples"]["n"]:
            ap.error(f"--{name} {value}: a multiple of {SIZE} up to {BENCH['samples']['n']}")
    if args.analyse_only and not (workdir / "results").is_dir():
        ap.error(f"{workdir}: no benchmark run there yet")
    workdir.mkdir(parents=True, exist_ok=True)
    # the workflow, its config and the cached model, not copies (relinked every time: the
    # analysis reads the config's vote weights)
    for name, target in [(n, ROOT / n) for n in LINKED] + [("config.yaml", config.resolve())]:
        link = workdir / name
        if link.is_symlink() and link.readlink() != target:
            link.unlink()  # made by another checkout, or another config
        if not link.is_symlink():
            link.symlink_to(target)
    if not args.analyse_only:
        write_problems(workdir, args.problems, args.limit)
        run(workdir, args.base, args.samples)
    table = analyse(workdir, args.base)
    write_text(table + "\n", workdir / "self_correction.md")
    print(table)


if __name__ == "__main__":
    main()
