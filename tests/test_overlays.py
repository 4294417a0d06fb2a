"""The GPU overlays fit their GPU, the arithmetic written out: the context holds a full trace,
and the KV cache holds the traces run at once. No engine, no GPU: the figures are the model's
shape and the config's numbers; each assertion message shows them."""

from pathlib import Path

import pytest

from aimo import config

pytestmark = pytest.mark.needs("unit")

ROOT = Path(__file__).resolve().parents[1]
GiB = 1 << 30

# An H100 "80 GB" shows CUDA a little under 80 GiB (the lent H100s here: "about 78 GiB"; the
# lower figure, to be safe); vLLM takes gpu_memory_utilization of it.
GPU_GiB = 78.0
# vLLM's profiled peak activations, CUDA graphs and the CUDA context, beside weights and cache.
OVERHEAD_GiB = 4.0
# A first prompt: system, problem and instructions, rendered by the chat template.
PROMPT_TOKENS = 1024
# An output block's own tokens around the code's output: "```output\n", "\n```\n".
FENCE_TOKENS = 16

# The models the overlays name (config/h100.yaml names QwQ-32B as the other choice): layers
# whose KV cache grows with the context, KV heads, head dim, parameters (billions), and of
# them those the quantization leaves in 16 bits (billions: embeddings and lm_head; gpt-oss's
# attention and router too). From the models' config.json. gpt-oss-120b: 36 layers, every
# other one a 128-token sliding window, which vLLM's hybrid cache gives a few fixed pages.
SHAPES = {
    "openai/gpt-oss-120b": (18, 8, 64, 116.8, 2.2),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": (64, 8, 128, 32.8, 1.56),
    "Qwen/QwQ-32B": (64, 8, 128, 32.8, 1.56),
    "Qwen/Qwen3-32B": (64, 8, 128, 32.8, 1.56),
}
DTYPE_BYTES = {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}  # auto: bf16 on a GPU
QUANT_BYTES = {"fp8": 1, "awq": 0.5, "gptq": 0.5, "mxfp4": 4.25 / 8}  # bytes a weight
# checkpoints quantized as released (engine.quantization null reads them so)
CHECKPOINT_QUANT = {"openai/gpt-oss-120b": "mxfp4"}
KV_BYTES = {"fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}  # bytes a value; auto: the model's dtype

# Full traces the KV cache must hold at once: every sample of a problem for the online run
# (Kaggle), 8 for the batch run (the scheduler admits up to OVERCOMMIT x what the cache holds,
# counting most traces to end short of their budget; 8 full ones keep preemption rare).
OVERLAYS = {
    "config/kaggle.yaml": "online",
    "config/h100.yaml": 8,
    "config/qwen3.yaml": "online",
    "config/gpt-oss.yaml": "online",
}


def overlay(path):
    cfg = config.load([ROOT / "config.yaml", ROOT / path])
    name = cfg["model"]["name"]
    assert name in SHAPES, f"{path}: model {name!r} has no shape in tests/test_overlays.py"
    return cfg, SHAPES[name]


@pytest.mark.parametrize("path", OVERLAYS)
def test_the_context_holds_a_full_trace(path):
    cfg, _ = overlay(path)
    # a code output is cut to output_chars characters; a character is at most one token
    # (Qwen's tokenizer writes digits one by one)
    rounds, chars = cfg["tir"]["max_rounds"], cfg["sandbox"]["output_chars"]
    max_tokens, context = cfg["sampling"]["max_tokens"], cfg["engine"]["max_model_len"]
    trace = PROMPT_TOKENS + max_tokens + rounds * (chars + FENCE_TOKENS)
    assert trace <= context, (
        f"{path}: a full trace is prompt {PROMPT_TOKENS} + max_tokens {max_tokens} + "
        f"{rounds} outputs x ({chars} + {FENCE_TOKENS}) = {trace} tokens > max_model_len {context}"
    )


@pytest.mark.parametrize("path", OVERLAYS)
def test_the_kv_cache_holds_the_traces_run_at_once(path):
    cfg, (layers, kv_heads, head_dim, params_b, embed_b) = overlay(path)
    eng, dtype = cfg["engine"], cfg["model"]["dtype"]
    quant = eng["quantization"] or CHECKPOINT_QUANT.get(cfg["model"]["name"])
    assert quant is None or quant in QUANT_BYTES, f"{path}: quantization {quant!r} unknown here"
    if quant is None:
        weights = params_b * 1e9 * DTYPE_BYTES[dtype]
    else:
        weights = (params_b - embed_b) * 1e9 * QUANT_BYTES[quant] + embed_b * 1e9 * 2
    per_token = (
        2 * layers * kv_heads * head_dim * KV_BYTES.get(eng["kv_cache_dtype"], DTYPE_BYTES[dtype])
    )
    usable = GPU_GiB * GiB * eng["gpu_memory_utilization"]
    cache = usable - weights - OVERHEAD_GiB * GiB
    tokens = cache / per_token
    want = OVERLAYS[path]
    traces = cfg["online"]["samples"]["n"] if want == "online" else want
    need = traces * eng["max_model_len"]
    assert tokens >= need, (
        f"{path}: KV cache ({GPU_GiB} GiB x {eng['gpu_memory_utilization']} = "
        f"{usable / GiB:.1f} GiB - weights {weights / GiB:.1f} GiB ({quant or dtype}) - "
        f"{OVERHEAD_GiB} GiB) / {per_token // 1024} KiB a token "
        f"(kv_cache_dtype {eng['kv_cache_dtype']}) = {tokens:,.0f} tokens < {traces} traces x "
        f"max_model_len {eng['max_model_len']} = {need:,}"
    )
