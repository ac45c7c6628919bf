"""Masked next-token prediction (MNTP), LLM2Vec's first step: with the causal mask removed, the model
learns to predict masked tokens from both sides. As in LLM2Vec, the token at position i is predicted
from the output at position i-1, which keeps the LM head's next-token role.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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


def mntp_loss(
    causal_lm: torch.nn.Module, masked_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
):
    """Cross-entropy of the masked tokens, each predicted from the previous position's logits, with
    bidirectional attention."""
    if not (labels != IGNORE_INDEX).any():  # nothing masked in this batch: a zero that keeps the graph
        return sum(p.sum() for p in causal_lm.parameters() if p.requires_grad) * 0.0
    logits = causal_lm(input_ids=masked_ids, attention_mask=bidirectional_mask(attention_mask)).logits
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:]
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )
