"""A local instruct model answering chat prompts, for paraphrasing and synthetic data.

Thin on purpose: generation itself is ``tuneforge.tasks.decoding.generate`` (length-sorted
batches, left padding, stop on end-of-turn), the same code that evaluates decoder tasks. Decoding
is greedy, so a fixed prompt gives a fixed answer; diversity comes from varying the prompt (which
seed examples it shows), which also keeps runs reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tuneforge.errors import ConfigError


@dataclass(frozen=True)
class ChatModel:
    model: Any
    tokenizer: Any


@lru_cache(maxsize=2)
def chat_model(name: str = "smollm2-135m-instruct") -> ChatModel:
    """The decoder ``name`` (registry name or local folder) with its tokenizer, loaded once per process."""
    from tuneforge.models.loading import load_model, load_tokenizer
    from tuneforge.models.resolve import resolve_model

    resolved = resolve_model(name)
    if resolved.kind != "decoder":
        raise ConfigError(f"{name} is an {resolved.kind}; paraphrasing and synthetic data need an instruct decoder "
                          "such as smollm2-135m-instruct")
    model = load_model(resolved, head="causal_lm").eval()
    return ChatModel(model, load_tokenizer(resolved.path))


def generate_answers(chat: ChatModel, prompts: list[list[dict[str, str]]], *, max_new_tokens: int = 48,
                     batch_size: int = 8) -> list[str]:
    """The model's answer to each chat prompt, in order."""
    from tuneforge.tasks.decoding import generate

    if not prompts:
        return []
    return generate(chat.model, chat.tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    desc="generate")
