"""Prompt and completion content, recorded only when content capture is switched on."""

from __future__ import annotations

import json


def _text_or_ids(tokenizer, ids: list[int]) -> dict:
    if tokenizer is not None:
        try:
            return {"type": "text", "content": tokenizer.decode(ids, skip_special_tokens=True)}
        except Exception:  # an odd tokenizer must not lose the content: fall back to ids
            pass
    return {"type": "token_ids", "content": ids}


def input_messages(tokenizer, prompts: list[list[int]]) -> str:
    return json.dumps([{"role": "user", "parts": [_text_or_ids(tokenizer, ids)]} for ids in prompts])


def output_messages(tokenizer, completions: list[list[int]], finish_reasons: list[str]) -> str:
    return json.dumps(
        [
            {"role": "assistant", "parts": [_text_or_ids(tokenizer, ids)], "finish_reason": reason}
            for ids, reason in zip(completions, finish_reasons)
        ]
    )
