"""The online run and main.py's `predict` on the tiny model, called the way Kaggle's AIMO3
gateway calls it: from a worker thread, rows shuffled, one-row polars Series per column. The
harness is the project's own, written from ../shared/notes/aimo3-interface.md (Kaggle's code is
not on PyPI and is never copied here)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pandas as pd
import polars as pl
import psutil
import pytest
from conftest import ROOT, SHARED, need_shared

sys.path.insert(0, str(ROOT))  # main.py, the Kaggle entry point, sits at the top
import main  # noqa: E402
from aimo import config as aimo_config
from aimo import online as aimo_online
from aimo import prompts
from aimo import solver as aimo_solver
from aimo.engines.embedded import alive, vllm_processes
from aimo.online import OnlineRun, TimeBank, final_answer
from aimo.schemas import PROBLEMS, TRACES
from aimo.tables import read_metadata, read_table

pytestmark = pytest.mark.needs("engine")

OVERLAY = """
sampling: {{max_tokens: 96}}
online: {{samples: {{n: 4}}, scheduler: {{early_stop: 2}}, budget_s: {budget},
          expected_problems: 40, min_s: {min_s}, max_s: 60, reserve_s: 1, tail_s: 2,
          run_dir: {run_dir}}}
"""


def load_config(tmp_path, model=None, budget=86400, min_s=5):
    """The tiny online config and its overlay file; `model`: the session's tiny model folder
    (conftest's tiny_model), run as a local model, so nothing is built in the checkout."""
    # the bank counts from the process's start: pytest's, here, maybe an hour before
    overlay = tmp_path / "online.yaml"
    text = OVERLAY.format(budget=budget, min_s=min_s, run_dir=tmp_path / "run")
    if model is not None:
        text += f"model: {{source: local, path: {model}}}\n"
    overlay.write_text(text)
    return aimo_config.load(
        [ROOT / "config.yaml", ROOT / "tests/tiny/config.yaml", overlay]
    ), overlay


def gateway(predict, csv_path, seed=0):
    """Call `predict` as the gateway does; check every reply; return the submission frame."""
    df = pl.read_csv(csv_path).sample(fraction=1.0, shuffle=True, seed=seed)
    replies = []
    with ThreadPoolExecutor(1) as worker:  # the gRPC server's single worker thread
        for row in df.iter_slices(n_rows=1):
            reply = worker.submit(predict, *row).result()  # *DataFrame: one Series per column
            assert isinstance(reply, (pl.DataFrame, pd.DataFrame)), type(reply)
            assert len(reply) == 1 and {"id", "answer"} <= set(reply.columns)
            reply = reply if isinstance(reply, pl.DataFrame) else pl.from_pandas(reply)
            answer = reply["answer"].item(0)
            assert type(answer) is int and 0 <= answer <= 99999
            assert reply["id"].item(0) == str(row["id"].item(0))
            replies.append(reply.select("id", "answer"))
    return pl.concat(replies, how="vertical_relaxed")


@pytest.fixture(scope="module")
def online(tmp_path_factory, tiny_model):
    config, _ = load_config(tmp_path_factory.mktemp("online"), tiny_model)
    s = OnlineRun(config)
    # started from a worker thread, as a notebook's own launcher would on the first call
    t = threading.Thread(target=s.start)
    t.start()
    t.join()
    main._online_run = s
    yield s
    main._online_run = None
    s.stop()


@pytest.mark.needs("unit")
def test_predict_is_a_plain_function_named_predict():
    assert isinstance(main.predict, types.FunctionType) and main.predict.__name__ == "predict"


def test_the_gateway_harness_on_the_test_file(online):
    sub = gateway(main.predict, need_shared(SHARED / "aimo3_test.csv"))
    assert sorted(sub["id"].to_list()) == sorted(
        pl.read_csv(SHARED / "aimo3_test.csv")["id"].to_list()
    )
    assert sub["answer"].dtype == pl.Int64


def test_the_gateway_harness_on_the_reference_file(online):
    sub = gateway(main.predict, need_shared(SHARED / "aimo3_reference.csv"), seed=1)
    assert len(sub) == 10
    run = online.run_dir
    for pid in sub["id"].to_list():
        rows = read_table(run / "traces" / f"{pid}.parquet", TRACES)
        assert rows.num_rows == 4
        meta = read_metadata(run / "traces" / f"{pid}.parquet")
        assert meta["budget_s"] > 0 and meta["used_s"] > 0 and meta["stopped"]
    # the reference answers are recorded beside the problems (never shown to the model)
    problems = read_table(run / "problems.parquet", PROBLEMS).to_pylist()
    assert all(p["answer"] is not None for p in problems if p["problem_id"] in sub["id"].to_list())


def test_bad_problems_get_the_fallback_and_nothing_escapes(online):
    empty = main.predict(pl.Series("id", ["e1"]), pl.Series("problem", [""]))
    assert empty["answer"].item(0) == 0
    long = main.predict(pl.Series("id", ["l1"]), pl.Series("problem", ["word " * 1200]))
    assert long["answer"].item(0) == 0
    rows = read_table(online.run_dir / "traces" / "l1.parquet", TRACES).to_pylist()
    assert {r["finish_reason"] for r in rows} == {"prompt_too_long"}
    numeric = main.predict(pl.Series("id", [12345]), pl.Series("problem", ["What is 2 + 3?"]))
    assert numeric["id"].item(0) == "12345" and type(numeric["answer"].item(0)) is int
    broken = main.predict(pl.Series("id", ["b1"]), None)  # not a problem at all
    assert broken["answer"].item(0) == 0


def test_the_same_problem_twice_is_answered_twice(online):
    for _ in range(2):
        out = main.predict(pl.Series("id", ["twice"]), pl.Series("problem", ["What is 6 times 7?"]))
        assert type(out["answer"].item(0)) is int
    assert (online.run_dir / "traces" / "twice.parquet").is_file()
    assert (online.run_dir / "traces" / "twice~2.parquet").is_file()


@pytest.mark.needs("unit")
def test_voted_answers_outside_the_range_fall_back():
    for bad in (10**30, -5, 100000, 3.0, "7", None, True):
        assert final_answer(bad, 0) == (0, True)
    assert final_answer(99999, 0) == (99999, False)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def run_bank(bank, clock, needs, vote_s=1.0):
    """Problems that each need `needs[i]` seconds (a slow engine: more than the bank can
    give) run under `bank`; each uses what it needs or its budget, then votes. Returns the
    budgets; asserts that no deadline and no vote passes the bank's end."""
    budgets = []
    for need in needs:
        budget = bank.budget()
        budgets.append(budget)
        deadline = clock.now + budget
        assert not budget or deadline <= bank.end - bank.tail_s + 1e-6
        clock.now += min(need, budget)
        clock.now += vote_s if budget else 0.0
        assert clock.now <= bank.end + 1e-6
        bank.record(clock.now - (deadline - budget) if budget else None)
    return budgets


@pytest.mark.needs("unit")
def test_the_bank_shares_a_slow_engine_evenly_and_never_passes_its_end():
    clock = FakeClock()
    bank = TimeBank(900, 10, 60, 180, 60, tail_s=5, clock=clock)
    budgets = run_bank(bank, clock, [400] * 10)  # every problem would use 400 s
    assert budgets[0] == 180  # the config's need (60 s) believed until a problem is measured
    rest = budgets[1:]  # then even shares of what is left, not max_s first and 0 at the end
    assert min(rest) > 70 and max(rest) - min(rest) < 10
    assert clock.now <= bank.end


@pytest.mark.needs("unit")
def test_the_bank_gives_what_easy_problems_leave_to_hard_ones():
    clock = FakeClock()
    bank = TimeBank(17400, 50, 300, 900, 300, tail_s=30, clock=clock)
    budgets = run_bank(bank, clock, [60] * 25 + [5000] * 25, vote_s=5)
    assert budgets[0] == 900
    assert budgets[25] == 900  # the easy half left time for the hard half
    assert min(budgets[25:]) > 300  # and none of the hard ones starves
    assert clock.now <= bank.end


@pytest.mark.needs("unit")
def test_a_short_bank_gives_its_minimum_first_not_too_little_to_all():
    clock = FakeClock()  # this CPU's shape: 40 problems that each need more than the bank holds
    bank = TimeBank(2578, 40, 150, 240, 150, tail_s=5, clock=clock)
    budgets = run_bank(bank, clock, [400] * 40)
    given = [b for b in budgets if b > 0]
    assert len(given) == 18 and min(given[:-1]) >= 150  # the last gets what is left
    assert budgets[len(given) :] == [0.0] * (40 - len(given))
    assert clock.now <= bank.end


@pytest.mark.needs("unit")
def test_a_spent_bank_gives_nothing_and_the_need_follows_the_run():
    clock = FakeClock()
    bank = TimeBank(100, 3, 10, 90, 10, tail_s=2, clock=clock)
    assert bank.budget() == pytest.approx(100 - 12 * 2 - 2)
    bank.record(50)
    bank.record(50)
    assert bank.need() == 50  # measured: the median seconds used, above the floor of 10
    clock.now = 99.0
    assert bank.budget() == 0.0  # 1 s left, less the tail: nothing to spend
    clock.now = 200.0
    assert bank.budget() == 0.0


@pytest.mark.needs("unit")
def test_a_spent_bank_answers_the_fallback_at_once(tmp_path):
    config, _ = load_config(tmp_path)
    # a bank of 1 s (a config says at least a problem's min_s: this is a bank spent by start-up)
    config["online"].update(budget_s=1, min_s=3)
    s = OnlineRun(config)
    time.sleep(1.1)
    started = time.monotonic()
    first = s.solve("p1", "What is 2 + 2?")
    second = s.solve("p2", "What is 3 + 3?")
    assert time.monotonic() - started < 5 and s.solver is None  # not even a start
    assert first.stopped == second.stopped == "bank spent"
    assert first.fallback and second.answer == 0


@pytest.mark.needs("unit")
def test_the_bank_counts_from_the_process_start():
    code = (
        "import time; time.sleep(1.5); from aimo.online import process_start; "
        "print(time.monotonic() - process_start())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert 1.5 <= float(out.stdout) < 30, out.stderr
    bank = TimeBank(100, 1, 1, 100, 0, start=time.monotonic() - 40)
    assert 59 <= bank.left() <= 60


def kill_core_mid_problem(online):
    """SIGKILL the engine core once a problem's traces are in the engine."""
    deadline = time.monotonic() + 60
    while not online.solver.engine.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    for p in psutil.Process().children(recursive=True):
        if p.name().startswith("VLLM::EngineCore"):
            os.kill(p.pid, signal.SIGKILL)


def test_a_hung_step_is_bounded_and_the_next_problem_restarts(online, monkeypatch):
    client = online.solver.engine.engine.engine_core
    get_output, calls = client.get_output, []

    def hangs():  # the third step waits for outputs that never come, until unblocked
        calls.append(1)
        while len(calls) == 3 and not client.resources.engine_dead:
            time.sleep(0.05)
        return get_output()

    monkeypatch.setattr(client, "get_output", hangs)
    monkeypatch.setattr(online.solver, "step_timeout_s", 2)
    started = time.monotonic()
    hung = online.solve("hangs", "Write out every prime below 500, then their sum. " * 3)
    assert hung.stopped == "engine died" and hung.fallback
    assert time.monotonic() - started < 30
    after = online.solve("after-hang", "What is 6 times 7?")
    assert after.stopped != "engine died" and after.finished + after.cancelled == 4


def test_no_answer_by_the_deadline_asks_the_longest_traces_for_one(online, monkeypatch):
    # the traces' deadline comes before any box (4 s), and the forced answers are bounded by
    # the problem's end, 4 s later: time for 4 short prefills even on a slow CPU (half the
    # budget here, where a run gives forcing at most a quarter); room for 900 tokens a trace,
    # which no CPU writes in 4 s (96, the tiny config's, a fast one did: 'length', not cut)
    monkeypatch.setitem(online.solver.params["sampling"], "max_tokens", 900)
    monkeypatch.setattr(online.bank, "max_s", 8.0)
    monkeypatch.setitem(online.online, "force_s", 4.0)
    monkeypatch.setattr(aimo_online, "FORCE_SHARE", 0.5)
    started = time.monotonic()
    result = online.solve("forced", "List every prime below 500, one per line, nothing else. " * 3)
    assert time.monotonic() - started < 8.0 + 3  # the end, and the vote and the writes after it
    rows = read_table(online.run_dir / "traces" / "forced.parquet", TRACES).to_pylist()
    asked = [r for r in rows if prompts.FORCE_ANSWER in r["text"]]
    assert len(asked) == 4
    for r in asked:  # the continuation is on the row: text, tokens, a round of its own
        assert r["finish_reason"] == "deadline" and r["text"].endswith("}")
        assert sum(r["round_tokens"]) == r["completion_tokens"]
    assert result.forced == sum(
        r["answer_int"] is not None and 0 <= r["answer_int"] <= 99999 for r in asked
    )


def test_main_solves_a_file_and_evaluates_its_run(tmp_path, tiny_model):
    config, overlay = load_config(tmp_path, tiny_model)
    problems = tmp_path / "p.csv"
    # MATH's ids hold slashes; an id may try to leave the run folder: neither becomes a path
    ids = ["add", "mul", "test/algebra/1.json", "../escaped", "a,b"]
    problems.write_text(
        "id,problem,answer\nadd,What is 2 + 3?,5\nmul,What is 6 times 7?,42\n"
        'test/algebra/1.json,What is 4 + 4?,8\n../escaped,What is 9 - 2?,7\n"a,b",What is 1 + 1?,2\n'
    )
    out = tmp_path / "submission.csv"
    cmd = [
        sys.executable,
        str(ROOT / "main.py"),
        "--problems",
        str(problems),
        "--out",
        str(out),
        "--configfile",
        str(ROOT / "config.yaml"),
        str(ROOT / "tests/tiny/config.yaml"),
        str(overlay),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    submitted = pl.read_csv(out, schema_overrides={"id": pl.String})
    assert submitted["id"].to_list() == ids
    run = tmp_path / "run"
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    assert all(p.parts[0] == "run" and len(p.parts) <= 3 for p in written), written
    assert len(list((run / "traces").iterdir())) == len(ids)
    assert "samples finished" in proc.stderr + proc.stdout  # one line per problem
    env = dict(os.environ, AIMO_CONFIG=" ".join(cmd[-3:]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--evaluate", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run/evaluate/report.md").is_file()
    # the re-vote is the submission's: the same settings (online.vote) and rows
    votes = pl.read_parquet(tmp_path / "run/evaluate/votes.parquet")
    config = aimo_config.load(cmd[-3:])
    picked = votes.filter(pl.col("strategy") == config["vote"]["strategy"])
    revoted = dict(zip(picked["problem_id"], picked["answer"]))
    for pid, answer in zip(submitted["id"], submitted["answer"]):
        again = revoted.get(pid)
        assert (again if again is not None and 0 <= again <= 99999 else 0) == answer, pid


def engine_pids() -> set:
    return {proc.pid for proc in vllm_processes()}


def test_a_failed_start_leaves_nothing_running_and_the_next_problem_retries(
    tmp_path, monkeypatch, caplog, tiny_model
):
    config, _ = load_config(tmp_path, tiny_model)
    enter, calls = aimo_solver.Sandbox.__enter__, []

    def fails_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the sandbox pool could not start")
        return enter(self)

    monkeypatch.setattr(aimo_solver.Sandbox, "__enter__", fails_once)
    before = engine_pids()  # the module's online run may be running
    s = OnlineRun(config)
    warm = threading.Thread(target=s.warm)  # as main.serve_kaggle does, beside the server
    warm.start()
    first = s.solve("p1", "What is 2 + 3?")  # waits for the warm-up, which fails
    warm.join()
    try:
        assert "starting the engine failed: OSError" in caplog.text and s.solver is not None
        assert first.stopped not in ("error", "no engine") and len(calls) == 2
        assert first.finished + first.cancelled == 4  # the retry ran the problem
    finally:
        s.stop()
    deadline = time.monotonic() + 20  # the failed start shut its engine down, stop() the second
    while not engine_pids() <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert engine_pids() <= before


def test_an_unwritable_run_folder_loses_the_record_not_the_answer(online, caplog):
    traces = online.run_dir / "traces"
    traces.rename(online.run_dir / "traces.kept")
    traces.write_text("not a folder")  # writes into it fail, also as root
    try:
        result = online.solve("nowrite", "What is 6 times 7?")
    finally:
        traces.unlink()
        (online.run_dir / "traces.kept").rename(traces)
    assert result.stopped not in ("error",) and result.finished + result.cancelled == 4
    assert "the run folder" in caplog.text
    after = online.solve("written", "What is 2 + 3?")
    assert (traces / "written.parquet").is_file() and after.stopped != "error"


@pytest.mark.needs("unit")
def test_config_files_resolve_against_main_and_pick_kaggle_there(monkeypatch):
    for var in ("AIMO_CONFIG", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_IS_COMPETITION_RERUN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir("/")
    assert main.config_files() == [str(ROOT / "config.yaml")]
    assert main.config_files(["a.yaml"]) == ["a.yaml"]  # the command line's, as given
    monkeypatch.setenv("AIMO_CONFIG", "config.yaml /abs/x.yaml")
    assert main.config_files() == [str(ROOT / "config.yaml"), "/abs/x.yaml"]
    monkeypatch.delenv("AIMO_CONFIG")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert main.config_files() == [str(ROOT / "config.yaml"), str(ROOT / "config/kaggle.yaml")]


@pytest.mark.needs("unit")
def test_main_says_what_is_wrong_in_one_line(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(
        f"model: {{source: local, path: {tmp_path / 'no-model'}}}\n"
        f"online: {{run_dir: {tmp_path / 'run'}}}\n"
    )
    problems = tmp_path / "p.csv"
    problems.write_text("id,problem\na,What is 2 + 3?\n")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "main.py"),
            "--problems",
            str(problems),
            "--configfile",
            str(ROOT / "config.yaml"),
            str(overlay),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert "main.py: FileNotFoundError: model.path" in out and "no-model" in out, out
    assert "Traceback" not in out  # that is in the log
    assert "Traceback" in (tmp_path / "run/main.log").read_text()


def test_a_dead_engine_falls_back_and_dying_again_while_it_restarts_costs_one_problem(
    online, caplog
):
    """The engine dies mid-problem: that problem gets the fallback. The next problem starts it
    again, and its new core dies while starting: that problem gets the fallback too ("no
    engine"), nothing escapes, and the problem after it starts the engine for good. (One test:
    each restart is an engine start, the slowest thing the suite does.)"""

    def kill_new_core(stop, old):  # as soon as a new core exists
        while not stop.is_set():
            for p in psutil.Process().children(recursive=True):
                try:
                    if p.name().startswith("VLLM::EngineCore") and p.pid not in old:
                        os.kill(p.pid, signal.SIGKILL)
                        return
                except psutil.Error:
                    continue
            time.sleep(0.02)

    killer = threading.Thread(target=kill_core_mid_problem, args=(online,))
    killer.start()
    long = "Write out, step by step, every prime below 500, then their sum. " * 3
    first = online.solve("dies", long)
    killer.join()
    assert first.stopped == "engine died" and first.fallback and first.answer == 0
    stop = threading.Event()
    killer = threading.Thread(target=kill_new_core, args=(stop, engine_pids()))
    killer.start()
    second = online.solve("dies-2", "What is 6 times 7?")
    stop.set()
    killer.join()
    assert "starting it again" in caplog.text
    assert second.stopped == "no engine" and second.fallback and second.answer == 0
    assert "starting the engine again failed" in caplog.text and online.solver is None
    third = online.solve("after", "What is 6 times 7?")
    assert third.stopped not in ("no engine", "engine died", "error")
    assert third.finished + third.cancelled == 4


def test_every_trace_cut_with_a_box_in_it_still_answers(online, monkeypatch):
    """Every trace cancelled at the deadline, each with an answer in its text: they vote
    (online.vote.count_cancelled), the answer is theirs, not the fallback."""
    online.solve("cut-src", "What is 6 times 7?")
    rows = read_table(online.run_dir / "traces" / "cut-src.parquet", TRACES).to_pylist()
    for r, answer in zip(rows, [41, 41, 41, 7]):
        r.update(finish_reason="deadline", text=f"Counting: so far \\boxed{{{answer}}}, and ")
        r.update(answer=str(answer), answer_int=answer, problem_id="cut")
        r.update(trace_id=r["trace_id"].replace("cut-src", "cut"))
    monkeypatch.setattr(online.solver, "run", lambda requests, **kw: [dict(r) for r in rows])
    result = online.solve("cut", "What is 6 times 7?")
    assert result.cancelled == 4 and result.finished == 0 and result.stopped == "deadline"
    assert result.answer == 41 and not result.fallback and result.forced == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_rerun_shape_serve_in_one_process_and_the_gateway_in_another(tmp_path, tiny_model):
    """As the competition runs it: a notebook cell's `main.serve_kaggle()` (nothing else sets
    up logging) under KAGGLE_IS_COMPETITION_RERUN blocks in serve() while a gateway in another
    process, with a startup limit shorter than the engine's start, connects, sends every
    problem and gets valid answers (the project's harness, not Kaggle's code: tests/harness);
    the run's log is in its run folder."""
    need_shared(SHARED / "aimo3_test.csv")
    _, overlay = load_config(tmp_path, tiny_model)
    harness = ROOT / "tests/harness"
    env = dict(
        os.environ,
        KAGGLE_IS_COMPETITION_RERUN="1",
        AIMO_CONFIG=f"config.yaml tests/tiny/config.yaml {overlay}",
        AIMO_HARNESS_PORT=str(free_port()),
        PYTHONPATH=str(harness),
    )
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-c", "import main; main.serve_kaggle()"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,  # the model's folder, resources/models/, is the working directory's
            start_new_session=True,  # its engine's processes go with it
        )
    try:
        limit = 5  # seconds: the engine takes longer to start than this
        gw = subprocess.run(
            [sys.executable, str(harness / "gateway.py"), str(SHARED / "aimo3_test.csv")]
            + [str(tmp_path), "--startup-limit", str(limit)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        result = json.loads((tmp_path / "result.json").read_text())
        text = log.read_text()
        assert gw.returncode == 0 and result["Succeeded"], (result, text[-3000:])
        sub = pl.read_parquet(tmp_path / "submission.parquet")
        ids = pl.read_csv(SHARED / "aimo3_test.csv", schema_overrides={"id": pl.String})["id"]
        assert sorted(sub["id"].to_list()) == sorted(ids.to_list())
        ready = next(line for line in text.splitlines() if "engine and sandbox ready" in line)
        ready_at = datetime.strptime(ready[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        assert result["connect_time"] < ready_at  # served before the engine was up
        assert server.poll() is None  # still blocked in serve(): nothing after it ran
        kept = (tmp_path / "run/main.log").read_text()
        assert "engine and sandbox ready" in kept and kept.count("samples finished") == len(ids)
        # the notebook's process killed alone (a restart, the OOM killer): its engine's
        # processes, a session's orphans otherwise, go with it (embedded.reaper)
        engine = [
            p for p in psutil.Process(server.pid).children(recursive=True) if p.name()[:4] == "VLLM"
        ]
        assert engine, "the server's engine has no processes of its own"
        os.kill(server.pid, signal.SIGKILL)
        left = alive(engine, wait_s=15)
        assert not left, [p.name() for p in left]
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone with the server
            pass
        server.wait()


@pytest.mark.needs("unit")
def test_the_online_sandbox_runs_a_block_per_cpu():
    from aimo.online import sandbox_threads

    cpus = len(os.sched_getaffinity(0))
    assert sandbox_threads(64) == cpus and sandbox_threads(1) == 1
