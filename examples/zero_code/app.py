"""A plain transformers app with no OpenTelemetry code at all.

Run it as is, or with zero-code instrumentation:

    opentelemetry-instrument --traces_exporter console --metrics_exporter none \
        --logs_exporter none python examples/zero_code/app.py

It builds a tiny randomly initialised GPT-2 (no download, a second on CPU), generates
8 tokens greedily from fixed ids and prints them. The printed tokens are the same with
and without instrumentation.
"""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

PROMPT_IDS = [17, 254, 3, 981, 42, 600]
NEW_TOKENS = 8


def main() -> None:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        vocab_size=1000,
        n_positions=128,
        # GPT-2's default special ids (50256) lie outside this tiny vocabulary: with no
        # end-of-sequence token, generation always runs for exactly NEW_TOKENS steps.
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config).eval()
    input_ids = torch.tensor([PROMPT_IDS])
    output = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=NEW_TOKENS,
        do_sample=False,
    )
    print("generated token ids:", output[0, input_ids.shape[1]:].tolist())


if __name__ == "__main__":
    main()
