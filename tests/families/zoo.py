"""Tiny two-layer models of every family the matrix covers, built from configs with a fixed seed.

Each entry names the family, its transformers classes and the config fields that make it
tiny; `build(family, attn)` gives the same weights for every attention implementation, so
an eager twin can serve as the reference for the SDPA model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import transformers

STEPS = 5  # generated tokens per matrix case
ASSISTANT = "llama"  # drafts for every decoder family in assisted mode (all share the vocabulary)

VOCAB = 256
PAD, BOS, EOS = 0, 1, 2
SPECULATIVE = ("assisted", "prompt_lookup")
_TOKENS = dict(vocab_size=VOCAB, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
IMAGE_TOKEN, IMAGE_TOKENS = VOCAB - 1, 4
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=16,
               patch_size=8)
_DECODER = dict(
    num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=256, **_TOKENS,
)


@dataclass(frozen=True)
class Family:
    name: str
    model_class: str
    config_class: str
    config: dict
    kind: str = "decoder"  # decoder | seq2seq | whisper | vlm | recurrent
    note: str = ""  # what makes the family worth covering
    layers: int = 2
    # generate modes transformers itself refuses for this family, with its reason
    unsupported: dict = field(default_factory=dict)
    # what CoreVital cannot observe on this family and why (for docs/compatibility.md)
    limits: str = ""


def _decoder(name, model_class, config_class, note, unsupported=None, limits="", **overrides):
    config = {**_DECODER, **overrides}
    return Family(name, model_class, config_class, config, note=note, unsupported=unsupported or {}, limits=limits)


# checked by the matrix: the logit signals describe what generate samples from, after the head
_AFTER_HEAD = "logit statistics are taken after the model's {what}, from the logits generate samples from"

FAMILIES = [
    _decoder("gpt2", "GPT2LMHeadModel", "GPT2Config", "learned positions, Conv1D",
             **{"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 256}),
    _decoder("llama", "LlamaForCausalLM", "LlamaConfig", "grouped-query attention, RoPE"),
    _decoder("mistral", "MistralForCausalLM", "MistralConfig", "sliding-window attention", sliding_window=4),
    _decoder("qwen2", "Qwen2ForCausalLM", "Qwen2Config", "attention biases"),
    _decoder("qwen3", "Qwen3ForCausalLM", "Qwen3Config", "query/key norms", head_dim=16),
    _decoder("phi3", "Phi3ForCausalLM", "Phi3Config", "fused qkv projection"),
    _decoder("gemma", "GemmaForCausalLM", "GemmaConfig", "scaled embeddings", head_dim=16),
    # softcaps low enough to bite on a tiny model's small logits
    _decoder("gemma2", "Gemma2ForCausalLM", "Gemma2Config", "attention and final-logit softcapping",
             head_dim=16, sliding_window=4, final_logit_softcapping=1.0, attn_logit_softcapping=2.0,
             limits=_AFTER_HEAD.format(what="final-logit softcapping")),
    _decoder("gemma3", "Gemma3ForCausalLM", "Gemma3TextConfig", "final-logit softcapping, local/global layers",
             head_dim=16, sliding_window=4, final_logit_softcapping=1.0,
             limits=_AFTER_HEAD.format(what="final-logit softcapping")),
    _decoder("cohere", "CohereForCausalLM", "CohereConfig", "logit_scale after the head", logit_scale=0.5,
             limits=_AFTER_HEAD.format(what="`logit_scale`")),
    _decoder("granite", "GraniteForCausalLM", "GraniteConfig", "logits_scaling after the head",
             logits_scaling=4.0, limits=_AFTER_HEAD.format(what="`logits_scaling`")),
    _decoder("mixtral", "MixtralForCausalLM", "MixtralConfig", "mixture of experts",
             num_local_experts=4, num_experts_per_tok=2),
    _decoder("qwen2_moe", "Qwen2MoeForCausalLM", "Qwen2MoeConfig", "mixture of experts with a shared expert",
             num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32),
    _decoder("deepseek_v3", "DeepseekV3ForCausalLM", "DeepseekV3Config", "multi-head latent attention, MoE",
             kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
             n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
             n_group=1, topk_group=1, num_key_value_heads=4),
    _decoder("bloom", "BloomForCausalLM", "BloomConfig", "ALiBi positions",
             **{"n_layer": 2, "n_head": 4}),
    _decoder("mpt", "MptForCausalLM", "MptConfig", "ALiBi positions, decodes without a cache",
             unsupported={mode: "transformers: assisted decoding requires a cache" for mode in SPECULATIVE},
             **{"n_layers": 2, "d_model": 64, "n_heads": 4, "max_seq_len": 256}),
    _decoder("falcon", "FalconForCausalLM", "FalconConfig", "calls SDPA directly (up to transformers 5.24)", num_kv_heads=2,
             new_decoder_architecture=True,
             limits="up to transformers 5.24, under SDPA, Falcon calls torch's `scaled_dot_product_attention` itself, outside "
             "transformers' attention registry, and returns no weights: attention is reported unavailable "
             "with that reason; with `attn_implementation=\"eager\"` it is observed (checked by the matrix); from 5.25 "
             "it goes through the registry and is observed under SDPA too"),
    _decoder("gpt_neox", "GPTNeoXForCausalLM", "GPTNeoXConfig", "parallel residual"),
    _decoder("opt", "OPTForCausalLM", "OPTConfig", "learned positions with an offset",
             ffn_dim=128, word_embed_proj_dim=64),
    _decoder("olmo2", "Olmo2ForCausalLM", "Olmo2Config", "post-norm"),
    _decoder("starcoder2", "Starcoder2ForCausalLM", "Starcoder2Config", "sliding window, biases"),
    Family("mamba", "MambaForCausalLM", "MambaConfig", dict(
        num_hidden_layers=2, hidden_size=64, state_size=8, expand=2, conv_kernel=4, **_TOKENS,
    ), kind="recurrent", note="state-space layers, no attention",
        limits="no attention layers: attention statistics are reported unavailable with that reason"),
    Family("mamba2", "Mamba2ForCausalLM", "Mamba2Config", dict(
        num_hidden_layers=2, hidden_size=64, state_size=8, expand=2, head_dim=16, num_heads=8, n_groups=1,
        conv_kernel=4, chunk_size=16, **_TOKENS,
    ), kind="recurrent", note="state-space layers, no attention",
        limits="no attention layers: attention statistics are reported unavailable with that reason"),
    Family("jamba", "JambaForCausalLM", "JambaConfig", dict(
        _DECODER, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
        num_experts=2, num_experts_per_tok=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=8,
    ), kind="recurrent", note="hybrid: Mamba and attention layers of different classes",
        limits="attention statistics exist for the attention layers only (NaN rows for the Mamba layers)"),
    Family("bamba", "BambaForCausalLM", "BambaConfig", dict(
        _DECODER, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=16, mamba_n_groups=1, mamba_d_state=8,
        mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16,
    ), kind="recurrent", note="hybrid: Mamba2 and attention layers",
        limits="attention statistics exist for the attention layers only (NaN rows for the Mamba layers)"),
    Family("recurrent_gemma", "RecurrentGemmaForCausalLM", "RecurrentGemmaConfig", dict(
        _DECODER, num_key_value_heads=1, lru_width=64, attention_window_size=8, head_dim=16,
        block_types=["recurrent", "attention"], logits_soft_cap=1.0,
    ), kind="recurrent", note="recurrent and local-attention blocks, final-logit softcapping",
        limits=_AFTER_HEAD.format(what="final-logit softcapping")
        + "; attention statistics exist for the attention blocks only"),
    Family("t5", "T5ForConditionalGeneration", "T5Config", dict(
        num_layers=2, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=4, d_kv=8, vocab_size=VOCAB,
        decoder_start_token_id=PAD, pad_token_id=PAD, eos_token_id=EOS,
    ), kind="seq2seq", note="encoder-decoder, relative position bias"),
    Family("bart", "BartForConditionalGeneration", "BartConfig", dict(
        encoder_layers=2, decoder_layers=2, d_model=64, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256, decoder_start_token_id=EOS,
        forced_eos_token_id=None, forced_bos_token_id=None, **_TOKENS,
    ), kind="seq2seq", note="encoder-decoder, learned positions"),
    Family("whisper", "WhisperForConditionalGeneration", "WhisperConfig", dict(
        num_mel_bins=16, encoder_layers=2, decoder_layers=2, d_model=64, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=32,
        max_target_positions=64, decoder_start_token_id=3, suppress_tokens=None, begin_suppress_tokens=None,
        **_TOKENS,
    ), kind="whisper", note="audio features as inputs",
        limits="the input is audio features, not tokens: the span has no `gen_ai.usage.input_tokens`"),
    Family("llava", "LlavaForConditionalGeneration", "LlavaConfig", dict(
        vision_config=dict(model_type="clip_vision_model", **_VISION),
        text_config=dict(model_type="llama", **_DECODER), image_token_id=IMAGE_TOKEN,
        vision_feature_layer=-1, vision_feature_select_strategy="default",
    ), kind="vlm", note="vision-language: CLIP image features merged into a Llama"),
    Family("paligemma", "PaliGemmaForConditionalGeneration", "PaliGemmaConfig", dict(
        vision_config=dict(model_type="siglip_vision_model", **_VISION),
        text_config=dict(model_type="gemma", head_dim=16, num_image_tokens=IMAGE_TOKENS, **_DECODER),
        image_token_id=IMAGE_TOKEN, projection_dim=64,
    ), kind="vlm", note="vision-language: SigLIP image prefix, Gemma",
        limits="transformers' SDPA and eager PaliGemma compute different logits (the image prefix is masked "
        "differently), so only the eager model's captured attention is compared with eager weights"),
]


PROMPT_LENGTH = 6


def inputs(family: Family) -> dict:
    """generate's keyword inputs: token ids and a mask, audio features, or ids with image tokens and pixels."""
    generator = torch.Generator().manual_seed(1)
    if family.kind == "whisper":
        return {"input_features": torch.randn(1, family.config["num_mel_bins"], 64, generator=generator)}
    ids = torch.randint(3, VOCAB - 1, (1, PROMPT_LENGTH), generator=generator)
    if family.kind == "vlm":
        ids = torch.cat((torch.full((1, IMAGE_TOKENS), IMAGE_TOKEN), ids), dim=1)
        pixels = torch.randn(1, 3, 16, 16, generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def build(family: Family, attn: str | None = None) -> torch.nn.Module:
    """attn None keeps transformers' default (SDPA where the family supports it)."""
    config = getattr(transformers, family.config_class)(**family.config)
    if attn is not None:
        config._attn_implementation = attn
    torch.manual_seed(0)
    model = getattr(transformers, family.model_class)(config).eval()
    model.generation_config.pad_token_id = PAD
    return model


def family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


@functools.lru_cache(maxsize=None)
def models(name: str):
    """(default, eager) instances of a family, built once per test session."""
    f = family(name)
    default = build(f)
    attn = default.config._attn_implementation
    eager = build(f, "eager") if attn != "eager" else default
    return default, eager
