"""Masked next-token prediction (MNTP), LLM2Vec's first step: with the causal mask removed, the model
learns to predict masked tokens from both sides. As in LLM2Vec, the token at position i is predicted
from the output at position i-1, which keeps the LM head's next-token role.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from models.text_encoder import bidirectional_mask

IGNORE_INDEX = -100


def resolve_mask_token_id(tokenizer, mask_token: str) -> int:
    """The tokenizer's own mask token if it has one, else `mask_token` when it is a single token
    (LLM2Vec uses "_" for Llama), else the pad token."""
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    ids = tokenizer(mask_token, add_special_tokens=False).input_ids
    if len(ids) == 1:
        return int(ids[0])
    return int(tokenizer.pad_token_id)


def mask_for_mntp(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    probability: float,
    vocab_size: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked input ids, labels). Of the chosen maskable tokens, 80% become the mask token, 10% a
    random token and 10% stay (BERT's recipe); labels are IGNORE_INDEX everywhere else. Position 0 is
    never chosen: nothing before it can predict it."""
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & maskable.bool()
    chosen[:, 0] = False
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    draw = torch.rand(input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (draw < 0.8)] = mask_token_id
    random_slots = chosen & (draw >= 0.8) & (draw < 0.9)
    masked[random_slots] = torch.randint(vocab_size, (int(random_slots.sum()),), generator=generator)
    return masked, labels


# Masked positions per LM-head chunk: a chunk's fp32 logits are this x vocabulary x 4 bytes (2.1 GB at
# Llama-3's 128,256), recomputed in backward rather than kept.
HEAD_CHUNK_POSITIONS = 4096


def _chunk_loss_sum(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


def mntp_loss(
    causal_lm: torch.nn.Module,
    masked_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    chunk_positions: int = HEAD_CHUNK_POSITIONS,
):
    """Cross-entropy of the masked tokens, each predicted from the previous position's output, with
    bidirectional attention. The LM head runs only at the positions that predict a masked token, a chunk
    at a time under activation checkpointing: logits over the whole vocabulary at every position (17 GB in
    bf16 for 128 texts x 512 tokens x 128,256, and a 34 GB fp32 copy) would sit beside an 8B model."""
    predicting = labels[:, 1:] != IGNORE_INDEX  # position i predicts token i + 1
    if not predicting.any():  # nothing masked in this batch: a zero that keeps the graph
        return sum(p.sum() for p in causal_lm.parameters() if p.requires_grad) * 0.0
    hidden = causal_lm.get_decoder()(
        input_ids=masked_ids, attention_mask=bidirectional_mask(attention_mask)
    ).last_hidden_state
    chosen = hidden[:, :-1][predicting]  # [masked tokens, hidden]
    targets = labels[:, 1:][predicting]
    head = causal_lm.get_output_embeddings()
    total = sum(
        checkpoint(
            _chunk_loss_sum,
            head,
            chosen[start : start + chunk_positions],
            targets[start : start + chunk_positions],
            use_reentrant=False,
        )
        for start in range(0, len(targets), chunk_positions)
    )
    return total / len(targets)
