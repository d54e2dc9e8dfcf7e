"""Hub-free tokenizers for the tiny models: word-level ("zq17" <-> id 17) and byte-level ChatML.

The byte-level one makes every byte a token and carries ChatML special tokens and a ChatML chat
template, so it round-trips text exactly as real BPE tokenizers do, with no model hub.
"""

from __future__ import annotations

import tokenizers
import transformers

from tests.conftest import VOCAB

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A hub-free word-level tokenizer whose ids match the tiny models' VOCAB: "zq17" <-> 17."""
    specials = ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    words = specials + [f"zq{i}" for i in range(len(specials), VOCAB)]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    backend.decoder = tokenizers.decoders.WordPiece()  # joins words with spaces
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
        unk_token="[UNK]", padding_side="left",
    )


def chat_tokenizer() -> transformers.PreTrainedTokenizerFast:
    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    backend = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = tokenizers.decoders.ByteLevel()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>"], padding_side="left",
    )
    tokenizer.chat_template = CHATML
    return tokenizer
