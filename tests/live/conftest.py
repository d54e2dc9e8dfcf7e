"""Live-health fixtures: the successor-map Llama (looping and fluent paths) and a word tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

from tests.support.successor_model import VOCAB, build_successor_llama, chain, cycle_after

LOOP_LEAD, LOOP_PERIOD = 6, 4
LOOP_START_TOKEN, FLUENT_START_TOKEN = 10, 30
NONFINITE_TOKEN = 25  # reached on the 4th step from NONFINITE_START_TOKEN
NONFINITE_START_TOKEN = 21


@pytest.fixture(scope="session")
def successor_model():
    """Greedy: prompt ending in 10 -> 6 distinct tokens, then a period-4 loop;
    prompt ending in 30 -> 30 distinct tokens (fluent); prompt ending in 21 -> NaN at token 25."""
    successor = {
        **cycle_after(LOOP_START_TOKEN, LOOP_LEAD, LOOP_PERIOD),
        **chain(NONFINITE_START_TOKEN, 6),
        **chain(FLUENT_START_TOKEN, 30),
    }
    return build_successor_llama(successor, nonfinite_token=NONFINITE_TOKEN)


def prompt_ending_in(*last_tokens: int) -> torch.Tensor:
    return torch.tensor([[5, 7, token] for token in last_tokens])


@pytest.fixture(scope="session")
def word_tokenizer():
    """Token i is the word "w{i}": decoded text is the ids, space separated."""
    vocab = {f"w{i}": i for i in range(VOCAB)}
    backend = Tokenizer(WordLevel(vocab, unk_token="w3"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w3", pad_token="w0", eos_token="w2")
