"""The fused attention kernel gives the attention statistics the torch reduction gives.

What a user relies on: on a GPU, with `fused_attention` on (the default), a decoding step's
newest-query attention statistics (per-head entropy and largest weight) come from one Triton
launch (`capture/attention_kernel.py`) instead of `stats.newest_query_attention_layers`, and
they must be the same numbers, NaN where the torch reduction gives NaN (a row that attends
nothing); where the kernel does not apply it declines and the torch reduction runs.

CI has no GPU, so Triton's interpreter runs the same kernel on the CPU. The interpreter is chosen
when `triton` is imported (TRITON_INTERPRET=1), so one child process, started with that variable,
runs every case and prints its findings as one JSON object on its last line; the tests below
assert on parts of it:

- random layers (fixed seeds): grouped-query and multi-head, head sizes 16/64/80, key lengths
  that are not multiples of the kernel's key block, one and three batch rows, float32 / bfloat16 /
  float16 inputs, additive 4-D and boolean 2-D masks (one row fully masked), a soft cap and a
  custom scaling, against the torch reduction of float32 copies of the same inputs;
- layers the kernel must decline (it returns None; the same layers without the one difference run);
- tiny Llama, Gemma2 (soft cap, sliding window) and BART (cross-attention) models generating under
  a capture session with the kernel on and off: same tokens, same per-head statistics, and the
  kernel really ran in the fused call (a counting wrapper around `attention_kernel.launch`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

FLOAT32_ABS = 1e-4  # the kernel never rounds scores to the inputs' dtype; the reference sees float32 copies
HALF_ABS = 1e-3
MODEL_ABS = 1e-4  # tiny float32 models
NEW_TOKENS = 12
GEMMA2_WINDOW = 8  # shorter than prompt + new tokens: the window fills during the call
GEMMA2_SOFTCAP = 2.0  # the tiny Gemma2's scores reach ~2.5: the cap bites

# name -> the layers' layout; every case has `layers` layers sharing one mask, scaling and soft cap
RANDOM_CASES = {
    "mha-f32-d64-t37-r1": dict(seed=1, rows=1, heads=4, kv_heads=4, keys=37, dim=64, dtype="float32"),
    "gqa-f32-d16-t130-r3-additive": dict(
        seed=2, rows=3, heads=8, kv_heads=2, keys=130, dim=16, dtype="float32", mask="additive", layers=3
    ),
    "gqa-f32-d80-t37-r3-keep": dict(seed=3, rows=3, heads=8, kv_heads=2, keys=37, dim=80, dtype="float32", mask="keep"),
    "gqa-f32-d80-t130-r3-keep-masked-row": dict(
        seed=4, rows=3, heads=8, kv_heads=2, keys=130, dim=80, dtype="float32", mask="keep", masked_row=1
    ),
    "mha-f32-d16-t37-r3-additive-masked-row": dict(
        seed=5, rows=3, heads=4, kv_heads=4, keys=37, dim=16, dtype="float32", mask="additive", masked_row=1
    ),
    "gqa-f32-d64-t130-r3-additive-softcap30": dict(
        seed=6, rows=3, heads=8, kv_heads=2, keys=130, dim=64, dtype="float32", mask="additive", softcap=30.0,
        spread=2.5,
    ),
    "mha-f32-d16-t37-r1-scaling0.125": dict(
        seed=7, rows=1, heads=4, kv_heads=4, keys=37, dim=16, dtype="float32", scaling=0.125, spread=2.0
    ),
    # queries [R, Q, H, D] transposed and keys sliced from a longer cache, as models hand them over
    "gqa-f32-d64-t37-r3-additive-views-q3": dict(
        seed=8, rows=3, heads=8, kv_heads=2, keys=37, dim=64, dtype="float32", mask="additive", queries=3, views=True
    ),
    "gqa-bf16-d80-t130-r3-keep": dict(
        seed=9, rows=3, heads=8, kv_heads=2, keys=130, dim=80, dtype="bfloat16", mask="keep"
    ),
    "gqa-bf16-d64-t37-r3-additive-softcap30-scaling0.125": dict(
        seed=10, rows=3, heads=8, kv_heads=2, keys=37, dim=64, dtype="bfloat16", mask="additive", scaling=0.125,
        softcap=30.0, spread=3.0,
    ),
    "mha-f16-d64-t130-r3-additive-masked-row": dict(
        seed=11, rows=3, heads=4, kv_heads=4, keys=130, dim=64, dtype="float16", mask="additive", masked_row=1
    ),
    "gqa-f16-d16-t37-r1": dict(seed=12, rows=1, heads=8, kv_heads=2, keys=37, dim=16, dtype="float16", layers=3),
    "gqa-f16-d80-t130-r3-keep-masked-row-views-q2": dict(
        seed=13, rows=3, heads=8, kv_heads=2, keys=130, dim=80, dtype="float16", mask="keep", masked_row=1,
        queries=2, views=True,
    ),
}
DECLINED = ("different-scaling", "per-head-mask", "int64-mask")
FAMILIES = ("llama", "gemma2", "bart")

SCRIPT = r'''
import json
import sys

import torch
import transformers
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.modeling_utils import AttentionInterface
from transformers.models.gemma2.modeling_gemma2 import eager_attention_forward as gemma2_attention

from opentelemetry_instrumentation_corevital.capture import attention_kernel, decoding_loop, stats
from opentelemetry_instrumentation_corevital.capture.buffers import StepBuffers
from opentelemetry_instrumentation_corevital.capture.session import CaptureOptions, CaptureSession
from opentelemetry_instrumentation_corevital.capture.standalone import eos_token_ids_of

config = json.loads(sys.argv[1])
result = {"available": attention_kernel.available(torch.device("cpu"))}


def difference(got, want):
    """Max abs difference where both are numbers; whether NaN sits at the same places in both."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    if got.shape != want.shape:
        return {"diff": float("inf"), "nan_equal": False, "nans": -1, "numbers": 0}
    numbers = ~torch.isnan(got) & ~torch.isnan(want)
    return {
        "diff": float((got[numbers] - want[numbers]).abs().max()) if numbers.any() else 0.0,
        "nan_equal": bool(torch.equal(torch.isnan(got), torch.isnan(want))),
        "nans": int(torch.isnan(want).sum()),
        "numbers": int(numbers.sum()),
    }


# -- random layers: the kernel against the torch reduction of float32 copies -----------------------

def random_layers(seed, rows, heads, kv_heads, keys, dim, dtype, layers=2, queries=1, spread=1.0, views=False):
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(layers):
        if views:
            query = (torch.randn(rows, queries, heads, dim, generator=generator) * spread).to(dtype).transpose(1, 2)
            key = (torch.randn(rows, kv_heads, keys + 11, dim, generator=generator) * spread).to(dtype)[:, :, :keys]
        else:
            query = (torch.randn(rows, heads, queries, dim, generator=generator) * spread).to(dtype)
            key = (torch.randn(rows, kv_heads, keys, dim, generator=generator) * spread).to(dtype)
        out.append((query, key))
    return out


def random_mask(kind, rows, keys, queries, dtype, masked_row):
    if kind == "additive":  # [R, 1, Q, T + 3], the inputs' dtype
        mask = torch.zeros(rows, 1, queries, keys + 3, dtype=dtype)
        mask[rows - 1, :, :, 3:9] = float("-inf")  # some columns of one row
        mask[0, :, :, 0:3] = float("-inf")  # columns before the last `keys`: never read
        if masked_row is not None:
            mask[masked_row] = float("-inf")
        return mask
    if kind == "keep":  # [R, T + 2] boolean
        mask = torch.ones(rows, keys + 2, dtype=torch.bool)
        mask[0, 5:12] = False
        mask[rows - 1, 0:2] = False  # before the last `keys`: never read
        if masked_row is not None:
            mask[masked_row] = False
        return mask
    return None


result["random"] = {}
for name, case in config["random"].items():
    dtype = getattr(torch, case["dtype"])
    shape = {k: case[k] for k in ("seed", "rows", "heads", "kv_heads", "keys", "dim")}
    extra = {k: case[k] for k in ("layers", "queries", "spread", "views") if k in case}
    rows, keys, queries = case["rows"], case["keys"], case.get("queries", 1)
    mask = random_mask(case.get("mask"), rows, keys, queries, dtype, case.get("masked_row"))
    scaling, softcap = case.get("scaling"), case.get("softcap")
    pending = [(q, k, mask, scaling, softcap) for q, k in random_layers(dtype=dtype, **shape, **extra)]
    got = attention_kernel.fused_newest_query_attention(pending)
    float_mask = mask if mask is None or mask.dtype == torch.bool else mask.float()
    reference = [(q.float(), k.float(), float_mask, scaling, softcap) for q, k, *_ in pending]
    want = stats.newest_query_attention_layers(reference)
    result["random"][name] = {"ran": False} if got is None else {"ran": True, **difference(got, want)}

# -- layouts the kernel declines, each beside the same layers without the one difference -----------

(q0, k0), (q1, k1) = random_layers(20, 2, 4, 4, 37, 16, torch.float32)


def declines(pending, twin):
    return {
        "declined": attention_kernel.fused_newest_query_attention(pending) is None,
        "twin_ran": attention_kernel.fused_newest_query_attention(twin) is not None,
    }


result["declines"] = {
    "different-scaling": declines(
        [(q0, k0, None, 0.1, None), (q1, k1, None, 0.2, None)],
        [(q0, k0, None, 0.1, None), (q1, k1, None, 0.1, None)],
    ),
    "per-head-mask": declines(
        [(q0, k0, torch.zeros(2, 4, 1, 37), None, None)] * 2,
        [(q0, k0, torch.zeros(2, 1, 1, 37), None, None)] * 2,
    ),
    "int64-mask": declines(
        [(q0, k0, torch.ones(2, 37, dtype=torch.int64), None, None)] * 2,
        [(q0, k0, torch.ones(2, 37, dtype=torch.bool), None, None)] * 2,
    ),
}

# -- tiny models under a capture session, the kernel on and off -------------------------------------

real_launch, real_reduce = attention_kernel.launch, StepBuffers._reduce_pending_attention
reducing = {}  # the StepBuffers and step whose pending attention is being reduced
launches = []


def counting_launch(pending):
    out = real_launch(pending)
    buffers = reducing["buffers"]
    cross = next(
        c for (c, _), group in buffers.pending_attention.items() if any(entry[1] is pending[0][0] for entry in group)
    )
    mask = pending[0][2]
    launches.append({
        "step": reducing["step"], "cross": cross, "layers": len(pending), "keys": int(pending[0][1].shape[2]),
        "ran": out is not None, "scaling": pending[0][3], "softcap": pending[0][4],
        "mask": None if mask is None else f"{str(mask.dtype)[6:]}{list(mask.shape)}",
    })
    return out


def reduce(self, step):
    reducing.update(buffers=self, step=step)
    return real_reduce(self, step)


attention_kernel.launch = counting_launch
StepBuffers._reduce_pending_attention = reduce

# Gemma2 takes no SDPA in transformers; its own eager attention (soft cap and all), registered under
# another name, runs the same math through the attention registry, where the session observes it.
AttentionInterface.register("gemma2_registered", gemma2_attention)
AttentionMaskInterface.register("gemma2_registered", eager_mask)

PAD, BOS, EOS = 0, 1, 2
TOKENS = dict(vocab_size=128, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
DECODER = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, **TOKENS)
FAMILIES = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", "sdpa", DECODER),
    # weights drawn wider than Gemma2's default (0.02) so that attention scores reach the soft cap
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config", "gemma2_registered", dict(
        DECODER, head_dim=16, sliding_window=config["gemma2_window"], attn_logit_softcapping=config["gemma2_softcap"],
        final_logit_softcapping=None, initializer_range=0.2)),
    "bart": ("BartForConditionalGeneration", "BartConfig", "sdpa", dict(
        encoder_layers=2, decoder_layers=2, d_model=64, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256, decoder_start_token_id=EOS,
        forced_eos_token_id=None, forced_bos_token_id=None, **TOKENS)),
}
NEW_TOKENS = config["new_tokens"]


def build(name):
    model_class, config_class, attention, fields = FAMILIES[name]
    model_config = getattr(transformers, config_class)(**fields)
    model_config._attn_implementation = attention
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(model_config).eval()
    model.generation_config.pad_token_id = PAD
    return model


def captured(model, fused):
    ids = torch.randint(3, 128, (2, 7), generator=torch.Generator().manual_seed(3))
    attention_mask = torch.ones_like(ids)
    ids[1, :3], attention_mask[1, :3] = PAD, 0  # left padding on one row
    eos = eos_token_ids_of(model)
    options = CaptureOptions(max_steps=NEW_TOKENS, fused_attention=fused, eos_token_ids=tuple(sorted(eos)))
    session = CaptureSession(model, options)
    launches.clear()
    try:
        session.attach()
        with session.active():
            sequences = model.generate(
                input_ids=ids, attention_mask=attention_mask, max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS, do_sample=False,
            )
    finally:
        session.detach()
        decoding_loop.uninstall()
    session.finish(sequences, eos)
    return session, sequences, list(launches)


result["models"] = {}
for name in FAMILIES:
    model = build(name)
    fused, fused_sequences, fused_launches = captured(model, True)
    plain, plain_sequences, plain_launches = captured(model, False)
    run = {
        "faults": [None if s.fault is None else repr(s.fault) for s in (fused, plain)],
        "launches": fused_launches,
        "launches_off": len(plain_launches),
        "same_sequences": bool(torch.equal(fused_sequences, plain_sequences)),
        # the decoder starts from one token (encoder-decoder) or the 7-token prompt
        "new_tokens": int(fused_sequences.shape[1]) - (1 if model.config.is_encoder_decoder else 7),
    }
    for field in ("heads", "cross_heads"):
        got, want = getattr(fused.buffers, field), getattr(plain.buffers, field)
        if got is None or want is None:
            run[field] = None if got is None and want is None else {"diff": float("inf"), "nan_equal": False}
            continue
        run[field] = difference(got, want)
        numbers = ~torch.isnan(got) & ~torch.isnan(want)
        gap = torch.where(numbers, (got - want).abs(), torch.zeros_like(got))
        where = [int(i) for i in torch.unravel_index(gap.argmax(), gap.shape)]  # step, layer, stat, row, head
        run[field]["worst"] = {"at": where, "fused": float(got[tuple(where)]), "torch": float(want[tuple(where)])}
    result["models"][name] = run

result["failed"] = [repr(e) for e in attention_kernel._failed]
print(json.dumps(result))
'''


@pytest.fixture(scope="module")
def child():
    """The child process's findings (one run for the whole module)."""
    config = {
        "random": RANDOM_CASES, "new_tokens": NEW_TOKENS,
        "gemma2_window": GEMMA2_WINDOW, "gemma2_softcap": GEMMA2_SOFTCAP,
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(config)],
        env={**os.environ, "TRITON_INTERPRET": "1", "HF_HUB_OFFLINE": "1"},
        capture_output=True, text=True, timeout=600,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        pytest.fail(f"the interpreter's child process failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"the child printed no JSON last:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def test_the_interpreter_runs_the_kernel_on_the_cpu(child):
    assert child["available"], "attention_kernel.available(cpu) is False under TRITON_INTERPRET=1"
    assert child["failed"] == [], "the kernel raised; the torch reduction ran in its place"


@pytest.mark.parametrize("case", list(RANDOM_CASES))
def test_the_kernel_equals_the_torch_reduction_on_random_layouts(child, case):
    found = child["random"][case]
    assert found["ran"], "the kernel declined a layout it handles"
    assert found["nan_equal"], "NaN (a row that attends nothing) at other places than the torch reduction's"
    if RANDOM_CASES[case].get("masked_row") is not None:
        assert found["nans"] > 0
    assert found["numbers"] > 0
    tolerance = FLOAT32_ABS if RANDOM_CASES[case]["dtype"] == "float32" else HALF_ABS
    assert found["diff"] < tolerance, found


@pytest.mark.parametrize("case", DECLINED)
def test_the_kernel_declines_layouts_it_does_not_handle(child, case):
    found = child["declines"][case]
    assert found["declined"], "the kernel ran where the torch reduction must"
    assert found["twin_ran"], "the kernel also declines the same layers without the difference"


@pytest.mark.parametrize("family", FAMILIES)
def test_a_calls_attention_statistics_are_the_same_with_the_kernel_on_and_off(child, family):
    run = child["models"][family]
    assert run["faults"] == [None, None]
    assert run["same_sequences"] and run["new_tokens"] == NEW_TOKENS
    ran = [launch for launch in run["launches"] if launch["ran"]]
    assert ran, "the kernel never ran: the fused call fell back to the torch reduction"
    # layers whose keys share a length but not a mask (Gemma2's sliding and global layers before the
    # window fills) get a launch per mask: nothing falls back
    assert len(ran) == len(run["launches"]), [launch for launch in run["launches"] if not launch["ran"]]
    assert run["launches_off"] == 0
    fields = ("heads", "cross_heads") if family == "bart" else ("heads",)
    for field in fields:
        found = run[field]
        assert found is not None, f"no {field} recorded"
        assert found["nan_equal"], f"{field}: NaN at other places with the kernel on ({found})"
        assert found["numbers"] >= NEW_TOKENS * 2 * 2 * 2 * 4  # steps, layers, statistics, rows, heads
        assert found["diff"] < MODEL_ABS, f"{field}: {found}"
    if family == "bart":
        assert {launch["cross"] for launch in ran} == {False, True}, "the kernel ran for self- and cross-attention"
    if family == "gemma2":
        assert all(math.isclose(launch["softcap"], GEMMA2_SOFTCAP) for launch in ran)
        last = [launch for launch in ran if launch["step"] == NEW_TOKENS - 1]
        # the sliding layer's keys stay at the window while the global layer's keep growing
        keys = sorted(launch["keys"] for launch in last)
        assert keys[0] == GEMMA2_WINDOW < keys[-1]
