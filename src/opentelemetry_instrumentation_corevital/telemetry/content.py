"""Prompt and completion as GenAI messages, and whether the prompt was a chat.

Messages follow the semconv's schemas (gen-ai-input-messages.json and
gen-ai-output-messages.json of semconv v1.41.1): `{"role", "parts": [{"type": "text",
"content"}]}`, plus `finish_reason` on output messages. Without a tokenizer a part is
`{"type": "token_ids", "content": [...]}` (a custom part type, which the schemas allow), so the
reader can tell that text was not available.

A prompt counts as a chat when its text, decoded with special tokens, reads as the
tokenizer's own chat template rendered: the role markers are learnt once per tokenizer by
rendering a probe conversation, and the roles (system / user / assistant) are kept.

Nothing here decides whether content may leave the process: the handler calls this module
only when content capture is on, except `is_chat`, whose answer is one word.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass

_SENTINEL = "\u2063{}\u2063"  # INVISIBLE SEPARATOR: never produced by a template itself
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatFormat:
    """Role openers and the turn closer of one chat template."""

    openers: dict  # role -> text that starts a turn of that role
    closer: str

    @classmethod
    def learn(cls, tokenizer) -> "ChatFormat | None":
        if not getattr(tokenizer, "chat_template", None):
            return None
        for roles in (_ROLES, _ROLES[1:]):  # some templates fold the system turn into the user's
            found = cls._probe(tokenizer, roles)
            if found is not None:
                return found
        return None

    @classmethod
    def _probe(cls, tokenizer, roles) -> "ChatFormat | None":
        marks = [_SENTINEL.format(i) for i in range(len(roles))]
        try:
            rendered = tokenizer.apply_chat_template(
                [{"role": role, "content": mark} for role, mark in zip(roles, marks)], tokenize=False
            )
        except Exception:  # a template that refuses this conversation: no chat detection
            return None
        pieces, rest = [], rendered
        for mark in marks:
            if rest.count(mark) != 1:
                return None
            before, rest = rest.split(mark)
            pieces.append(before)
        closer = rest
        if not closer:
            return None
        openers = {roles[0]: pieces[0]}
        for role, piece in zip(roles[1:], pieces[1:]):
            if not piece.startswith(closer) or not piece[len(closer):]:
                return None
            openers[role] = piece[len(closer):]
        if not all(openers.values()) or len(set(openers.values())) != len(openers):
            return None
        return cls(openers, closer)

    def parse(self, text: str) -> list[tuple[str, str]] | None:
        """(role, content) turns of a rendered conversation, or None when `text` is not one.

        A trailing assistant opener (the generation prompt) is not a turn.
        """
        turns, position = [], 0
        while position < len(text):
            role = next((r for r, o in self.openers.items() if text.startswith(o, position)), None)
            if role is None:
                return None
            start = position + len(self.openers[role])
            end = text.find(self.closer, start)
            if end < 0:
                if role == "assistant" and start == len(text):
                    break  # the generation prompt
                return None
            turns.append((role, text[start:end]))
            position = end + len(self.closer)
        return turns or None


_formats: "weakref.WeakKeyDictionary[object, ChatFormat | None]" = weakref.WeakKeyDictionary()


def _chat_format(tokenizer) -> ChatFormat | None:
    try:
        return _formats[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weak-referenceable: learn each time
        return ChatFormat.learn(tokenizer)
    found = ChatFormat.learn(tokenizer)
    _formats[tokenizer] = found
    return found


def chat_turns(tokenizer, ids: list[int]) -> list[tuple[str, str]] | None:
    """The prompt's (role, content) turns when it is a rendered chat, else None. Never raises."""
    if tokenizer is None or not ids:
        return None
    try:
        chat = _chat_format(tokenizer)
        if chat is None:
            return None
        text = tokenizer.decode(ids, skip_special_tokens=False)
        bos = getattr(tokenizer, "bos_token", None)
        if bos and text.startswith(bos) and not any(o.startswith(bos) for o in chat.openers.values()):
            text = text[len(bos):]  # tokenizing the rendered chat added a BOS the template does not write
        return chat.parse(text)
    except Exception:
        return None


def is_chat(tokenizer, ids: list[int]) -> bool:
    return chat_turns(tokenizer, ids) is not None


def _part(tokenizer, ids: list[int]) -> dict:
    if tokenizer is not None:
        try:
            return {"type": "text", "content": tokenizer.decode(ids, skip_special_tokens=True)}
        except Exception:  # an odd tokenizer must not lose the content: fall back to ids
            pass
    return {"type": "token_ids", "content": list(ids)}


def input_messages(tokenizer, ids: list[int]) -> list[dict]:
    """One prompt row as its message list: the chat's turns with their roles, else one user message."""
    turns = chat_turns(tokenizer, ids)
    if turns is None:
        return [{"role": "user", "parts": [_part(tokenizer, ids)]}]
    return [{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in turns]


def output_message(tokenizer, ids: list[int], finish_reason: str) -> dict:
    return {"role": "assistant", "parts": [_part(tokenizer, ids)], "finish_reason": finish_reason}


def on_span(messages: list[dict]) -> str:
    """Messages as a span (or span event) attribute: a JSON string.

    gen-ai-spans.md (v1.41.1) asks for the structured form on spans where supported and allows
    a JSON string otherwise. The Python SDK accepts structured values, but Langfuse's OTLP
    ingestion does not read them (it turns each kvlist into an opaque string, so no messages
    show), while it and Phoenix both parse the JSON string. Log-based events carry the
    structured form, as the spec requires there.
    """
    return json.dumps(messages, ensure_ascii=False)


def plain_text(messages: list[dict]) -> str:
    """The text parts of `messages`, joined (what a text/plain view shows)."""
    texts = [str(p["content"]) for m in messages for p in m["parts"] if p.get("type") == "text"]
    return "\n".join(texts) if texts else json.dumps(messages)
