"""Beam search paths are resolved however generate reorders its beams.

With a cache, generate reorders it (the session sees the reorder); without one
(`use_cache=False`, or models such as MPT that decode without a cache) every forward gets
the full rows, and each row's parent is the earlier row its prefix came from.
"""

import pytest
import torch

from tests.conftest import prompt_ids
from tests.support.capture import assert_summaries_follow_beams, capture

STEPS = 5


@pytest.mark.parametrize("name", ["llama", "t5"])
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("do_sample", [False, True])
def test_every_returned_beam_gets_the_logits_generate_used(models, name, use_cache, do_sample):
    model = models[name]
    ids = prompt_ids(batch=2)
    kwargs = dict(max_new_tokens=STEPS, num_beams=3, num_return_sequences=2, do_sample=do_sample, use_cache=use_cache)
    torch.manual_seed(0)
    reference = model.generate(ids, output_logits=True, return_dict_in_generate=True, **kwargs)
    torch.manual_seed(0)
    output, summaries, session = capture(model, ids, **kwargs)
    assert session.fault is None, session.fault
    assert torch.equal(output, reference.sequences)
    assert_summaries_follow_beams(summaries, reference, entropy_abs=1e-4)
