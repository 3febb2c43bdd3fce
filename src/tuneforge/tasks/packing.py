"""Sample packing for decoder fine-tuning: several examples per row, each attending only to itself.

Why: a padded batch of mixed lengths spends a large share of its compute on padding (SNIPS slot
prompts run from about 60 to 120 tokens: a batch padded to its longest row is a third padding).
Packing puts the examples of a micro-batch end to end in rows of at most ``max_tokens`` tokens
(first-fit decreasing, so few rows and little padding), restarts the position ids at 0 for each
example, and passes no attention mask: transformers (>= 4.54, ``masking_utils.find_packed_sequence_indices``)
then reads the example boundaries from the position ids and builds a block-diagonal causal mask
for the sdpa and eager attention paths (flash-attention-2 uses the same position ids as varlen
boundaries). An example therefore sees exactly the context it would see alone, so its loss is the
same as unpacked (the test checks it to 1e-5), while the batch does only the work of its real tokens.

The same examples form the same micro-batch as without packing, so the number of examples per
optimizer step, the loss normalisation by the answer tokens of the whole step, and exact resume are
unchanged. The first token of each packed example gets no label: the position before it belongs to
the previous example, and predicting across the boundary would teach nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tuneforge.tasks.base import Encoded

IGNORE = -100


def pack_rows(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Indices of the examples in each row: first-fit decreasing bin packing into rows of ``max_tokens``.

    >>> pack_rows([5, 3, 4, 2], 8)
    [[0, 1], [2, 3]]
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if lengths[i] > max_tokens:
            raise ValueError(f"example {i} has {lengths[i]} tokens, more than the row width {max_tokens}")
        slot = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            rows.append([i])
            room.append(max_tokens - lengths[i])
        else:
            rows[slot].append(i)
            room[slot] -= lengths[i]
    return rows


def collate_packed(batch: list[Encoded], pad_id: int, max_tokens: int) -> dict[str, torch.Tensor]:
    """Pack a micro-batch into rows; returns ``input_ids``, ``labels`` and ``position_ids``, all ``(R, W)``.

    The padding after the last example of a row is one more segment (positions from 0, no labels),
    so it attends only to itself and no real token attends to it.
    """
    rows = pack_rows([len(e.input_ids) for e in batch], max_tokens)
    width = max(sum(len(batch[i].input_ids) for i in row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (R, W)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)  # (R, W)
    positions = torch.zeros((len(rows), width), dtype=torch.long)  # (R, W)
    for r, row in enumerate(rows):
        col = 0
        for i in row:
            e = batch[i]
            n = len(e.input_ids)
            ids[r, col : col + n] = torch.tensor(e.input_ids)
            labels[r, col : col + n] = torch.tensor(e.labels)
            labels[r, col] = IGNORE  # predicted by the previous example's last position: no loss across the seam
            positions[r, col : col + n] = torch.arange(n)
            col += n
        positions[r, col:] = torch.arange(width - col)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}
