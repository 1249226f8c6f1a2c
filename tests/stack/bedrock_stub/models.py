"""The stub's model catalogue and its deterministic answers: same request, same text, same usage."""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

REPLY_WORDS = ["Hello", "from", "the", "Bedrock", "stub.", "This", "reply", "is", "deterministic."]
REASONING_WORDS = ["The", "user", "greeted", "me,", "so", "I", "greet", "back."]
TITAN_V2_DIMENSIONS = (256, 512, 1024)


@dataclass(frozen=True)
class Model:
    family: str  # "anthropic", "deepseek", "titan-embed-v2", "titan-embed-v1"
    converse: bool
    invoke: bool


_BASE_MODELS: dict[str, Model] = {
    "anthropic.claude-3-5-haiku-20241022-v1:0": Model("anthropic", True, True),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": Model("anthropic", True, True),
    "anthropic.claude-3-5-sonnet-20240620-v1:0": Model("anthropic", True, True),
    "anthropic.claude-3-haiku-20240307-v1:0": Model("anthropic", True, True),
    "anthropic.claude-opus-4-20250514-v1:0": Model("anthropic", True, True),
    "anthropic.claude-sonnet-4-20250514-v1:0": Model("anthropic", True, True),
    "deepseek.r1-v1:0": Model("deepseek", True, False),
    "amazon.titan-embed-text-v2:0": Model("titan-embed-v2", False, True),
    "amazon.titan-embed-text-v1": Model("titan-embed-v1", False, True),
}
_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.")


def resolve(model_id: str) -> Model | None:
    """A model id, cross-region profile id (``us.…``) or ARN (foundation-model / inference-profile)."""
    if model_id.startswith("arn:"):
        # arn:aws:bedrock:us-east-1::foundation-model/<id> or arn:aws:bedrock:…:inference-profile/<profile id>
        fields = model_id.split(":", 5)
        if len(fields) != 6 or fields[2] != "bedrock" or "/" not in fields[5]:
            return None
        kind, _, model_id = fields[5].partition("/")
        if kind not in ("foundation-model", "inference-profile", "application-inference-profile"):
            return None
    for prefix in _PROFILE_PREFIXES:
        if model_id.startswith(prefix) and model_id[len(prefix) :] in _BASE_MODELS:
            return _BASE_MODELS[model_id[len(prefix) :]]
    return _BASE_MODELS.get(model_id)


def count_tokens(text: str) -> int:
    """Deterministic stand-in for a tokenizer: about four characters per token, at least one."""
    return max(1, math.ceil(len(text) / 4))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text_of(block) for block in content)
    if isinstance(content, dict):
        for key in ("text", "inputText"):
            if isinstance(content.get(key), str):
                return str(content[key])
        if "content" in content:
            return _text_of(content["content"])
    return ""


def prompt_text(body: dict[str, Any]) -> str:
    """All the text a Converse or Anthropic-messages request sends (system + messages)."""
    return " ".join(filter(None, [_text_of(body.get("system", "")), _text_of(body.get("messages", []))]))


@dataclass(frozen=True)
class Reply:
    pieces: list[str]  # the text, split the way it is streamed
    reasoning: list[str]
    stop_reason: str  # Converse spelling: end_turn | max_tokens
    input_tokens: int
    output_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def reply(model: Model, prompt: str, max_tokens: int | None) -> Reply:
    """One output token per word piece; ``max_tokens`` truncates, as a real model would."""
    pieces = [word if i == 0 else " " + word for i, word in enumerate(REPLY_WORDS)]
    reasoning = (
        [w if i == 0 else " " + w for i, w in enumerate(REASONING_WORDS)]
        if model.family == "deepseek"
        else []
    )
    budget = max_tokens if max_tokens is not None and max_tokens > 0 else None
    stop = "end_turn"
    if budget is not None and budget < len(pieces) + len(reasoning):
        stop = "max_tokens"
        reasoning = reasoning[:budget]
        pieces = pieces[: max(0, budget - len(reasoning))]
    return Reply(pieces, reasoning, stop, count_tokens(prompt), len(pieces) + len(reasoning))


def embedding(text: str, dimensions: int, normalize: bool) -> list[float]:
    """A deterministic pseudo-embedding of ``text`` (SHA-256 stream), unit length when ``normalize``."""
    values: list[float] = []
    counter = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend((v / 2**31) - 1.0 for v in struct.unpack(">8I", digest))
        counter += 1
    values = values[:dimensions]
    if normalize:
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        values = [v / norm for v in values]
    return [round(v, 6) for v in values]
