"""The project's AIMO3 gateway, for tests: connect to the inference server within a startup
limit, send each problem (`id`, `problem`, one-row columns) one after the other in a random
order, check every reply, write submission.parquet and result.json into OUT_DIR.

    python tests/harness/gateway.py TEST_CSV OUT_DIR [--startup-limit S]

Exit 0 when the run succeeded, 1 otherwise (result.json says why: SERVER_NEVER_STARTED,
SERVER_RAISED_EXCEPTION, INVALID_PREDICTION)."""

import argparse
import json
import os
import sys
import time
from multiprocessing.connection import Client
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kaggle_evaluation.aimo_3_inference_server import AUTHKEY, address  # noqa: E402


def connect(limit_s):
    started = time.monotonic()
    while True:
        try:
            return Client(address(), authkey=AUTHKEY)
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() - started > limit_s:
                return None
            time.sleep(0.2)


def check(reply, problem_id):
    """Why a reply is not a valid prediction for `problem_id`, or None."""
    if set(reply) < {"id", "answer"} or len(reply["id"]) != 1:
        return f"not one row with id and answer: {reply}"
    answer = reply["answer"][0]
    if str(reply["id"][0]) != str(problem_id):
        return f"id {reply['id'][0]!r} for problem {problem_id!r}"
    if type(answer) is not int or not 0 <= answer <= 99999:
        return f"answer {answer!r} is not an int in [0, 99999]"
    return None


def run_gateway(test_csv, out_dir, startup_limit_s=900.0):
    out_dir = Path(out_dir)
    result = {"Succeeded": False, "error": None, "connect_time": None, "calls": 0}
    df = pl.read_csv(test_csv, schema_overrides={"id": pl.String}).select("id", "problem")
    df = df.sample(fraction=1.0, shuffle=True, seed=int.from_bytes(os.urandom(4), "little"))
    conn = connect(startup_limit_s)
    if conn is None:
        result["error"] = f"SERVER_NEVER_STARTED: no server after {startup_limit_s} s"
    else:
        result["connect_time"] = time.time()
        rows = []
        with conn:
            for row in df.iter_slices(n_rows=1):
                conn.send(("predict", row.to_dict(as_series=False)))
                kind, reply = conn.recv()
                result["calls"] += 1
                why = reply if kind != "ok" else check(reply, row["id"][0])
                if why:
                    result["error"] = (
                        "SERVER_RAISED_EXCEPTION: " if kind != "ok" else "INVALID_PREDICTION: "
                    ) + why
                    break
                rows.append({"id": str(reply["id"][0]), "answer": reply["answer"][0]})
            conn.send(("stop", None))
        if result["error"] is None:
            pl.DataFrame(rows).write_parquet(out_dir / "submission.parquet")
            result["Succeeded"] = True
    (out_dir / "result.json").write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("test_csv")
    ap.add_argument("out_dir")
    ap.add_argument("--startup-limit", type=float, default=900.0)
    args = ap.parse_args()
    sys.exit(0 if run_gateway(args.test_csv, args.out_dir, args.startup_limit)["Succeeded"] else 1)
