"""Text embeddings from an encoder folder (the embedded MiniLM by default), for BERTScore and retrieval.

One small class rather than sentence-transformers: tuneforge already loads Hugging Face encoders,
and the two things needed here are short: per-token hidden states of one layer (BERTScore) and the
mean-pooled, L2-normalised sentence vector that all-MiniLM-L6-v2 was trained to produce
(https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2, "mean pooling").
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tuneforge.models.loading import load_encoder


def default_encoder_path() -> Path:
    """The embedded MiniLM folder (``minilm-l6`` in the model registry)."""
    from tuneforge.models.resolve import resolve_model

    return resolve_model("minilm-l6").path


class TextEncoder:
    """An encoder's tokenizer and body, in eval mode on the CPU, loaded through the safe-loading gate."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.tokenizer, self.model = load_encoder(self.path)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @torch.no_grad()
    def token_embeddings(self, ids: list[int], layer: int) -> torch.Tensor:
        """Hidden states of ``layer`` (0 = embeddings) for one encoded sentence: ``(T, D)``."""
        out = self.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        return out.hidden_states[layer][0].float()  # (T, D)

    @torch.no_grad()
    def sentence_embeddings(self, texts: list[str], *, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
        """Mean-pooled last-layer states over real tokens, L2-normalised: ``(N, D)``; cosine = dot product."""
        out = []
        for start in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[start : start + batch_size], padding=True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state  # (B, T, D)
            mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), dtype=np.float32)


@lru_cache(maxsize=2)
def get_encoder(path: str | None = None) -> TextEncoder:
    """A cached ``TextEncoder``; ``None`` means the embedded MiniLM."""
    return TextEncoder(path or default_encoder_path())
