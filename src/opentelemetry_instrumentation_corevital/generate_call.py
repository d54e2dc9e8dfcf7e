"""What a generate call asked for and what it returned, read without changing either."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field

import torch
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai


@functools.lru_cache(maxsize=32)
def _signature(function) -> inspect.Signature:
    return inspect.signature(function)


def _as_id_set(value) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, torch.Tensor):
        return {int(v) for v in value.flatten().tolist()}
    if isinstance(value, (list, tuple, set)):
        return {int(v) for v in value}
    return {int(value)}


# transformers generates this many new tokens when neither max_new_tokens nor max_length is set
DEFAULT_NEW_TOKENS = 20


def _number(value, kind):
    return None if value is None else kind(value)


def _max_new_tokens(config, effective, is_encoder_decoder: bool, prompt_width: int) -> int:
    if effective("max_new_tokens") is not None:
        return int(effective("max_new_tokens"))
    max_length = effective("max_length")
    if max_length is not None:
        # an encoder-decoder's max_length counts the decoder start token; a decoder's counts the prompt
        return max(int(max_length) - (1 if is_encoder_decoder else prompt_width), 0)
    limit = getattr(config, "max_position_embeddings", None)
    if limit is not None and not is_encoder_decoder:
        return max(min(DEFAULT_NEW_TOKENS, int(limit) - prompt_width), 0)
    return DEFAULT_NEW_TOKENS


def _stop_strings(value) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return ()


def model_id(model) -> str:
    name = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    return str(name) if name else type(model).__name__


def _token_ids(*candidates) -> torch.Tensor | None:
    """The first [rows, tokens] integer tensor: audio features and embeddings are not token ids."""
    for value in candidates:
        if isinstance(value, torch.Tensor) and value.dim() == 2 and not value.is_floating_point():
            return value
    return None


@dataclass
class GenerateCall:
    model_id: str
    is_encoder_decoder: bool
    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    max_new_tokens: int | None
    do_sample: bool
    num_beams: int
    num_return_sequences: int
    temperature: float | None
    top_p: float | None
    top_k: int | None
    eos_token_ids: set[int] = field(default_factory=set)
    pad_token_id: int | None = None
    tokenizer: object | None = None
    # (rows, positions) of a decoder-only prompt given as inputs_embeds alone
    embeds_shape: tuple[int, int] | None = None
    # the decoder tokens an encoder-decoder's returned sequences start with (its start token by default)
    decoder_prompt_width: int = 1
    # assisted decoding or prompt lookup: a forward may accept several tokens at once
    speculative: bool = False
    # the models whose own generate calls make this call's drafts (an assistant, or the model itself)
    draft_models: tuple = ()
    # request-side semconv: stop_strings as gen_ai.request.stop_sequences, a streamer as a stream
    stop_sequences: tuple[str, ...] = ()
    streaming: bool = False
    # set by the handler once the tokenizer is known: `chat` or `text_completion`, and (content
    # capture only) each prompt row's messages
    operation: str = gen_ai.GenAiOperationNameValues.TEXT_COMPLETION.value
    input_messages: list[list[dict]] = field(default_factory=list)

    @classmethod
    def parse(cls, model, wrapped, args, kwargs) -> "GenerateCall":
        arguments = _signature(wrapped).bind_partial(*args, **kwargs).arguments
        extra = dict(arguments.get("kwargs", {}))
        config = arguments.get("generation_config") or getattr(model, "generation_config", None)

        def effective(name):
            # an explicit None wins, as in generate (e.g. eos_token_id=None: never stop early)
            return extra[name] if name in extra else getattr(config, name, None)

        input_ids = _token_ids(arguments.get("inputs"), extra.get("input_ids"))
        mask = extra.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and input_ids is not None and mask.shape != input_ids.shape:
            mask = None  # it does not describe these ids (generate lets some models take a wider one)
        is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        embeds = None if is_encoder_decoder or input_ids is not None else extra.get("inputs_embeds")
        embeds_shape = tuple(embeds.shape[:2]) if isinstance(embeds, torch.Tensor) and embeds.dim() == 3 else None
        decoder_ids = _token_ids(extra.get("decoder_input_ids"))
        prompt_width = int(input_ids.shape[-1]) if input_ids is not None else (embeds_shape or (0, 0))[1]
        max_new_tokens = _max_new_tokens(model.config, effective, is_encoder_decoder, prompt_width)
        do_sample = bool(effective("do_sample"))
        assistant = arguments.get("assistant_model")
        early_exit = effective("assistant_early_exit")
        return cls(
            model_id=model_id(model),
            is_encoder_decoder=is_encoder_decoder,
            input_ids=input_ids,
            embeds_shape=embeds_shape,
            decoder_prompt_width=1 if decoder_ids is None else int(decoder_ids.shape[-1]),
            attention_mask=mask if isinstance(mask, torch.Tensor) else None,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            num_beams=int(effective("num_beams") or 1),
            num_return_sequences=int(effective("num_return_sequences") or 1),
            temperature=_number(effective("temperature"), float) if do_sample else None,
            top_p=_number(effective("top_p"), float) if do_sample else None,
            top_k=_number(effective("top_k"), int) if do_sample else None,
            eos_token_ids=_as_id_set(effective("eos_token_id")),
            pad_token_id=effective("pad_token_id"),
            tokenizer=extra.get("tokenizer"),
            speculative=bool(assistant is not None or effective("prompt_lookup_num_tokens") or early_exit),
            draft_models=tuple(m for m in (assistant, model if early_exit else None) if m is not None),
            stop_sequences=_stop_strings(effective("stop_strings")),
            streaming=arguments.get("streamer") is not None,
        )

    def input_token_counts(self) -> list[int]:
        """Prompt tokens per row, padding excluded; empty when the input is not tokens (audio features)."""
        if self.attention_mask is not None and self.attention_mask.dim() == 2:
            return [int(v) for v in self.attention_mask.sum(-1).tolist()]
        if self.input_ids is None:
            if self.embeds_shape is not None:
                return [self.embeds_shape[1]] * self.embeds_shape[0]
            return []
        ids = self.input_ids
        if self.pad_token_id is not None and int(self.pad_token_id) not in self.eos_token_ids:
            return [int(v) for v in (ids != int(self.pad_token_id)).sum(-1).tolist()]
        return [int(ids.shape[-1])] * int(ids.shape[0])

    def prompt_rows(self) -> list[list[int]]:
        """Prompt ids per row, padding removed."""
        if self.input_ids is None:
            return []
        rows = self.input_ids.detach().cpu()
        if self.attention_mask is None:
            return rows.tolist()
        keep = self.attention_mask.detach().cpu().bool()
        return [row[mask].tolist() for row, mask in zip(rows, keep)]

    def generated_part(self, sequences: torch.Tensor) -> torch.Tensor:
        if self.is_encoder_decoder:
            return sequences[:, self.decoder_prompt_width :]
        width = 0 if self.input_ids is None else self.input_ids.shape[-1]
        return sequences[:, width:]


@dataclass
class GenerateResult:
    sequences: torch.Tensor | None
    output_token_counts: list[int]
    finish_reasons: list[str]
    completions: list[list[int]] = field(default_factory=list)

    @classmethod
    def from_output(cls, call: GenerateCall, output) -> "GenerateResult":
        sequences = output if isinstance(output, torch.Tensor) else getattr(output, "sequences", None)
        if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2:
            return cls(None, [], [])
        generated = call.generated_part(sequences).detach().cpu()
        counts, reasons, completions = [], [], []
        for row in generated.tolist():
            count, stopped = _count_until_eos(row, call.eos_token_ids)
            counts.append(count)
            completions.append(row[:count])
            hit_limit = call.max_new_tokens is not None and count >= call.max_new_tokens
            reasons.append("stop" if stopped or not hit_limit else "length")
        return cls(sequences, counts, reasons, completions)


def _count_until_eos(row: list[int], eos: set[int]) -> tuple[int, bool]:
    """Tokens up to and including the first EOS; what follows is padding."""
    for index, token in enumerate(row):
        if token in eos:
            return index + 1, True
    return len(row), False
