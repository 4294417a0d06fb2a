"""The Kaggle entry point: `predict(id_, problem, *rest)` answers one AIMO3 problem.

    python main.py                                 # Kaggle: serve() in the rerun, else a local gateway
    python main.py --problems FILE [--out submission.csv] [--configfile config.yaml more.yaml]
    python main.py --evaluate runs/online          # re-vote and evaluate an online run's files
    python main.py --evaluate runs/online --compare results   # and compare it with another run

Config: the workflow's own files, `--configfile A.yaml B.yaml` as in Snakemake, or, with no
command line (the gateway, a notebook), the same list from the environment variable
AIMO_CONFIG, separated by spaces, relative paths taken from main.py's folder; by default
config.yaml, and on Kaggle config.yaml with config/kaggle.yaml. Kaggle's `kaggle_evaluation`
package (shipped with the competition data, not on PyPI) is imported only by `serve_kaggle`.
An error ends the command with one line on the terminal (the traceback goes to the log).
"""

import argparse
import functools
import logging
import os
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the aimo package beside it, from any working directory
from aimo.logs import OneLine  # noqa: E402

log = logging.getLogger("aimo.main")
_online_run = None
_start_lock = threading.Lock()


def on_kaggle() -> bool:
    """Running in a Kaggle notebook (interactive, a commit, or the competition's rerun)."""
    return bool(os.getenv("KAGGLE_KERNEL_RUN_TYPE") or os.getenv("KAGGLE_IS_COMPETITION_RERUN"))


def config_files(argv=None) -> list[str]:
    """The config files: the command line's as given, else AIMO_CONFIG's or the default,
    relative to main.py's folder."""
    if argv:
        return list(argv)
    files = os.environ.get("AIMO_CONFIG", "").split()
    if not files:
        files = ["config.yaml"] + (["config/kaggle.yaml"] if on_kaggle() else [])
    return [str(HERE / f) for f in files]  # an absolute f stays as it is


def online_run(files=None):
    """The process's online run, made on first use; its engine starts on `warm()` (the
    server's launcher calls it in the background) or on the first problem."""
    global _online_run
    with _start_lock:
        if _online_run is None:
            from aimo import config
            from aimo.online import OnlineRun

            _online_run = OnlineRun(config.load(config_files(files)))
    return _online_run


def _value(x):
    """The one value of a one-row polars or pandas Series (or a plain value)."""
    if hasattr(x, "to_list"):
        x = x.to_list()
    elif hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return x[0] if x else None
    return x


def _frame(id_str: str, answer: int):
    try:
        import polars as pl

        return pl.DataFrame({"id": [id_str], "answer": [int(answer)]})
    except ImportError:
        import pandas as pd

        return pd.DataFrame({"id": [id_str], "answer": [int(answer)]})


def _never_raises(fn):
    @functools.wraps(fn)
    def predict(id_, problem, *rest):
        id_str = "?"
        try:
            id_str = str(_value(id_))
            return fn(id_str, problem, *rest)
        except BaseException:  # anything that escapes ends the whole submission
            log.exception("predict(%s) failed; answering the fallback", id_str)
            fallback = 0
            try:
                fallback = int(_online_run.config["submission"]["fallback"]) if _online_run else 0
            except Exception:
                pass
            return _frame(id_str, fallback)

    return predict


@_never_raises
def predict(id_, problem, *rest):
    """One AIMO3 problem -> a one-row DataFrame (`id`, `answer` an int in [0, 99999]).

    Called by Kaggle's gateway with one-row polars Series (id, problem[, answer]); plain values
    work too. Never raises: a failure answers `submission.fallback`."""
    answer = _value(rest[0]) if rest else None  # reference files carry it; only recorded
    result = online_run().solve(id_, _value(problem), answer=answer)
    return _frame(id_, result.answer)


def serve_kaggle(test_csv=None):
    """Kaggle's inference server: serve() in the competition rerun, else a local gateway run
    over `test_csv`. The server comes up at once (the gateway gives up after 900 s without
    it); the engine loads beside it and the first `predict` waits for it."""
    import kaggle_evaluation.aimo_3_inference_server as kaggle  # only here: not on PyPI

    from aimo import logs

    # called from a notebook cell nothing else configures logging: the rerun keeps its log
    logs.attach(str(Path(online_run().config["online"]["run_dir"]) / "main.log"))
    server = kaggle.AIMO3InferenceServer(predict)
    threading.Thread(target=online_run().warm, name="aimo-warm", daemon=True).start()
    if os.getenv("KAGGLE_IS_COMPETITION_RERUN"):
        server.serve()
    else:
        server.run_local_gateway(
            (test_csv or "/kaggle/input/ai-mathematical-olympiad-progress-prize-3/test.csv",)
        )


def solve_file(problems, out, files):
    """`predict` over a problem file, with a progress bar; writes `out` (id,answer)."""
    from aimo import logs
    from aimo.config import load
    from aimo.problems import load as load_problems
    from aimo.submission import csv_text
    from aimo.tables import write_text

    config = load(config_files(files))
    rows = load_problems(problems)
    run_dir = Path(config["online"]["run_dir"])
    terminal = logs.setup(str(run_dir / "main.log"))
    from tqdm import tqdm

    online = online_run(files)
    online.start()  # a user's run: a model that cannot start is an error, not 0s for every problem
    answers = []
    try:
        for row in tqdm(rows, desc="problems", unit="problem", file=terminal):
            frame = predict(row["problem_id"], row["problem"], row.get("answer"))
            answers.append((row["problem_id"], int(_value(frame["answer"]))))
    finally:
        online.stop()
    write_text(csv_text(answers), out)
    log.info(
        "wrote %s (%d problems); traces in %s; bank left %.0f s",
        out,
        len(rows),
        run_dir,
        online.bank.left(),
    )


def compare(run_dir, other, fallback):
    """The trace inspector's comparison of RUN_DIR (an evaluated online run; the workflow's
    results/ when None) with `other`, into RUN_DIR/evaluate/compare (results/compare)."""
    from aimo.inspector import build_compare, locate

    first = Path(run_dir or "results")
    out = (first / "evaluate" if run_dir else first) / "compare"
    a, b = locate(first, fallback=fallback), locate(other, fallback=fallback)
    log.info("the comparison: %s", build_compare(a, b, out))


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="AIMO3 entry point: predict() over a problem file, "
        "Kaggle's gateway, or the evaluation of an online run."
    )
    ap.add_argument("--problems", help="CSV, JSONL or Parquet with id, problem[, answer]")
    ap.add_argument("--out", default="submission.csv")
    ap.add_argument("--configfile", nargs="+", default=None)
    ap.add_argument("--evaluate", metavar="RUN_DIR", help="re-vote and evaluate an online run")
    ap.add_argument(
        "--compare",
        metavar="OTHER",
        help="the problems right in one run and wrong in the other, with both runs' traces: "
        "RUN_DIR (or results/) against OTHER (a results or online run folder)",
    )
    ap.add_argument("--test-csv", help="the local gateway's problem file (Kaggle mode)")
    args = ap.parse_args(argv)
    try:
        run(args)
    except Exception as exc:  # one line on the terminal; the traceback into the log
        log.error("main.py: %s: %s", type(exc).__name__, exc, exc_info=True)
        return 1
    return 0


def run(args):
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLine("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.evaluate or args.compare:
        from aimo.config import load

        config = load(config_files(args.configfile))
        if args.evaluate:
            from aimo.online import evaluate_run

            res = evaluate_run(args.evaluate, config)
            print(res["report"])
            log.info("the traces: %s", res["inspect"])
        if args.compare:
            compare(args.evaluate, args.compare, config["submission"]["fallback"])
    elif args.problems:
        solve_file(args.problems, args.out, args.configfile)
    else:
        serve_kaggle(args.test_csv)


if __name__ == "__main__":
    sys.exit(main())
