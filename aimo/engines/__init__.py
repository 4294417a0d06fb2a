"""Where tokens come from: one seam, two backends, picked by `engine.backend`.

- `vllm` (aimo/engines/embedded.py): vLLM's offline engine inside this job, the default. Its
  core can run in this process, where one step() is one engine step, which the deterministic
  schedule needs.
- `openai` (aimo/engines/server.py): any OpenAI-compatible server (`vllm serve`, SGLang, ...),
  given by `engine.url`, or a `vllm serve` this job starts on its model when no URL is given.
  Requests go to its completions API as token ids and stream back; the server batches them.

The scheduler, the solver and the online run see only the `Backend` below; nothing outside
this package imports vllm.
"""

from dataclasses import dataclass
from typing import Protocol

BACKENDS = ("vllm", "openai")


@dataclass(frozen=True)
class Params:
    """Sampling of one request (one round of one trace). `logprobs`: the top-k
    log-probabilities wanted per sampled token (0: only its own).
    `skip_special`: special tokens left out of the text (False: the harmony dialect, whose
    structure they are)."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    stop: tuple
    logprobs: int = 0
    skip_special: bool = True  # the text without special tokens (a dialect may keep them)


@dataclass
class Output:
    """What one request wrote since its last Output: new token ids and their text (the text
    stops short of a stop string; the ids hold every token up to and including it).
    `cumulative_logprob`: the sampled tokens' log-probabilities summed over the whole request
    so far (None where the backend had none). `top`: per new token, its top-k
    log-probabilities (the sampled token's own entry left out). `stop_reason`: the stop string
    matched, when `finish_reason` is stop because of one."""

    request_id: str
    token_ids: list
    text: str
    finished: bool = False
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    cumulative_logprob: float | None = None
    top: list | None = None
    cached_tokens: int = 0


class Backend(Protocol):
    """An engine as the scheduler drives it: requests in as token ids, outputs out as they
    stream, one thread (the caller's) calling step()."""

    name: str  # the backend's engine.backend name
    exact_steps: bool  # step() is one engine step over exactly the requests added before it
    tokenizer: object  # the model's (Hugging Face) tokenizer: chat template, encode, decode

    def add(self, request_id: str, token_ids: list, params: Params): ...

    def step(self) -> list[Output]:
        """The outputs since the last step (waits for some while requests are in flight)."""

    def abort(self, request_ids: list):
        """End these requests; no Output comes for them after."""

    def busy(self) -> bool:
        """Requests are in flight: step() has something to report."""

    def kv_tokens(self) -> int | None:
        """Tokens the engine's KV cache holds, or None where it is not known (a server)."""

    def reset_cache(self):
        """Forget cached prefixes (a rerun prefills as the first run did)."""

    def unblock(self):
        """Make a step() that waits on a dead engine raise instead (another thread calls it)."""

    def watch(self, on_death=None):
        """Start watching the engine's processes; returns an object with dead(), stop() and
        `stopped` (a threading.Event). `on_death(name, pid)` as in embedded.EngineWatch."""

    def version(self) -> str:
        """The engine and its version, for the run's metadata."""

    def close(self): ...


def load(model_dir, params: dict, in_process: bool = False) -> Backend:
    """The backend `params["engine"]["backend"]` names, started on `model_dir` with the stage's
    config sections (model, engine, samples). `in_process`: the embedded engine's core in this
    process (the deterministic schedule)."""
    eng = params["engine"]
    if eng["backend"] == "openai":
        from aimo.engines import server

        return server.start(model_dir, params)
    if eng["backend"] != "vllm":
        raise ValueError(f"engine.backend {eng['backend']!r}: expected one of {BACKENDS}")
    from aimo.engines import embedded

    return embedded.Embedded(
        embedded.load(
            model_dir,
            dtype=params["model"]["dtype"],
            max_model_len=eng["max_model_len"],
            seed=params["samples"]["seed"],
            gpu_memory_utilization=eng["gpu_memory_utilization"],
            in_process=in_process,
            kv_cache_dtype=eng["kv_cache_dtype"],
            enforce_eager=None if eng["enforce_eager"] == "auto" else eng["enforce_eager"],
            quantization=eng["quantization"],
        )
    )
