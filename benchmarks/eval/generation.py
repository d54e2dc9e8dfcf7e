"""Run a model over the items in batches under a capture session; cache summaries per batch.

Capture is set up exactly as the instrumentor's handler sets it up (same CaptureOptions, the
attention-registry probes installed), so analyze() over these summaries gives what the span
would carry. Batches are left-padded; each finished batch is pickled under the cache folder,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

from .dataset import Item


@dataclass
class Generation:
    item_id: str
    text: str
    summaries: object  # RunSummaries of this one sequence (N = 1)
    seconds: float  # wall time of its batch divided by the batch size


def batches(items: list[Item], size: int) -> list[list[Item]]:
    groups: dict[tuple, list[Item]] = {}
    for item in items:
        groups.setdefault(item.batch_key, []).append(item)
    return [group[k:k + size] for group in groups.values() for k in range(0, len(group), size)]


def generate_all(items: list[Item], cache: Path, *, model_name: str = "smollm2", device: str = "cpu",
                 batch_size: int = 16, log=print) -> dict[str, Generation]:
    import torch

    from opentelemetry_instrumentation_corevital.capture import attention_registry
    from opentelemetry_instrumentation_corevital.profiles import load_profile

    from .models import load_model

    cache.mkdir(parents=True, exist_ok=True)
    plan = batches(items, batch_size)
    todo = [(k, batch) for k, batch in enumerate(plan) if not _batch_path(cache, k, batch).is_file()]
    log(f"{len(plan)} batches, {len(plan) - len(todo)} already cached")
    if todo:
        started = time.perf_counter()
        model, tokenizer = load_model(model_name, device)
        log(f"model loaded in {time.perf_counter() - started:.0f} s on {device}")
        profile = load_profile(model.config.model_type)
        attention_registry.install()
        try:
            for done, (k, batch) in enumerate(todo, 1):
                started = time.perf_counter()
                torch.manual_seed(k)
                results = _run_batch(model, tokenizer, batch, profile)
                seconds = time.perf_counter() - started
                for result in results:
                    result.seconds = seconds / len(batch)
                path = _batch_path(cache, k, batch)
                with open(path.with_suffix(".tmp"), "wb") as file:
                    pickle.dump(results, file)
                path.with_suffix(".tmp").rename(path)
                log(f"batch {done}/{len(todo)} ({len(batch)} x {batch[0].max_new_tokens} tokens, "
                    f"{batch[0].template}): {seconds:.1f} s")
        finally:
            attention_registry.uninstall()
    generations = {}
    for k, batch in enumerate(plan):
        with open(_batch_path(cache, k, batch), "rb") as file:
            for result in pickle.load(file):
                generations[result.item_id] = result
    return generations


def _batch_path(cache: Path, k: int, batch: list[Item]) -> Path:
    key = repr([(item.id, item.prompt, item.batch_key) for item in batch]).encode()
    return cache / f"batch{k:03d}-{hashlib.sha256(key).hexdigest()[:12]}.pkl"


def _run_batch(model, tokenizer, batch: list[Item], profile) -> list[Generation]:
    from opentelemetry_instrumentation_corevital.capture.standalone import generate_captured

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # some transformers versions load none from the GGUF file
        tokenizer.pad_token = tokenizer.eos_token
    texts = [prompt_text(tokenizer, item) for item in batch]
    # A chat template already opens with the model's BOS; a base model's plain text needs one (Gemma
    # without BOS answers nothing but "A:").
    inputs = tokenizer(texts, return_tensors="pt", padding=True,
                       add_special_tokens=not tokenizer.chat_template).to(model.device)
    item = batch[0]
    kwargs = {"max_new_tokens": item.max_new_tokens, "do_sample": False, "pad_token_id": tokenizer.pad_token_id,
              **item.generate_kwargs}
    # attention_stride 1 (every step's attention, as the instrumentor's `full` mode): the cached sets were made so
    output, summaries, fault = generate_captured(
        model, inputs, kwargs, profile, max_steps=item.max_new_tokens, attention_stride=1
    )
    if summaries is None:
        raise RuntimeError(f"capture failed on batch starting {item.id}: {fault}")
    prompt_length = inputs["input_ids"].shape[1]
    return [
        Generation(
            item_id=member.id,
            text=tokenizer.decode(output[i, prompt_length:], skip_special_tokens=True),
            summaries=one_sequence(summaries, i),
            seconds=0.0,
        )
        for i, member in enumerate(batch)
    ]


def prompt_text(tokenizer, item: Item) -> str:
    if not item.chat:
        return item.prompt
    if not tokenizer.chat_template:  # a base model: ask in the question-answer form it was trained on
        return f"Q: {item.prompt}\nA:"
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": item.prompt}], tokenize=False, add_generation_prompt=True
    )


def one_sequence(summaries, i: int):
    """The i-th returned sequence as its own RunSummaries (N = 1)."""
    def take(array):
        return None if array is None else array[i:i + 1].copy()

    return dataclasses.replace(
        summaries,
        logits=take(summaries.logits), token_ids=take(summaries.token_ids), valid=take(summaries.valid),
        hidden=take(summaries.hidden), attention=take(summaries.attention),
        cross_attention=take(summaries.cross_attention), repetition_cosine=take(summaries.repetition_cosine),
    )
