"""Retrieval metrics over embedding matrices.

Ties: two rules, `ties=`.
- "standard" (the default): what CLIP_benchmark and the papers' evaluators compute, a top-k by score in
  which equal scores are ordered by index (torch.topk's order), so that of two identical captions of
  different images one query hits and one misses. Use it to compare with published numbers.
- "strict": a match must beat every other candidate outright; any tie is a miss (0.0 where the standard
  rule gives 0.5 on exact duplicates). The long-caption experiment and CRA use it: a model that cannot tell
  two texts apart gets no credit there.
COCO has duplicate captions, so the evaluate stage reports the standard figure, and beside it the strict
one and the number of queries whose best match ties with a non-match (`*_tied_queries`).
"""

from __future__ import annotations

from typing import Literal

import torch

TieRule = Literal["standard", "strict"]


def caption_retrieval_accuracy(first: torch.Tensor, second: torch.Tensor) -> float:
    """CRA (LLM2CLIP, Table 1): caption i of the first set retrieves caption i of the second among all
    second captions; top-1 accuracy over cosine similarity. Ties count as misses unless i wins outright."""
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(
            f"expected two [n, d] matrices of one shape, got {tuple(first.shape)} and {tuple(second.shape)}"
        )
    first = torch.nn.functional.normalize(first.float(), dim=-1)
    second = torch.nn.functional.normalize(second.float(), dim=-1)
    similarity = first @ second.T
    positive = similarity.diagonal()
    others = similarity.clone()
    others.fill_diagonal_(float("-inf"))
    return (positive > others.max(dim=1).values).float().mean().item()


def recall_at_k(
    queries: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10), ties: TieRule = "standard"
) -> dict[int, float]:
    """Query i's match is target i: the share of queries whose match ranks in the top k by cosine
    similarity, ties ordered by the rule `ties` (module docstring)."""
    if queries.shape[0] != targets.shape[0] or queries.ndim != 2 or targets.ndim != 2:
        raise ValueError(
            f"expected [n, d] queries and targets, got {tuple(queries.shape)} and {tuple(targets.shape)}"
        )
    similarity = _cosine(queries, targets)
    matches = torch.eye(similarity.shape[0], dtype=torch.bool)
    ranks = _rank_of_best_match(similarity, matches, ties)
    return {k: (ranks < k).float().mean().item() for k in ks}


def _cosine(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return (
        torch.nn.functional.normalize(first.float(), dim=-1)
        @ torch.nn.functional.normalize(second.float(), dim=-1).T
    )


def top1_hits(similarity: torch.Tensor) -> list[bool]:
    """Per row of a square similarity matrix, whether its own column (the diagonal) beats every other
    strictly: R@1 per query under the strict rule (the long-caption experiment's)."""
    return ((similarity >= similarity.diagonal().unsqueeze(1)).sum(dim=1) == 1).tolist()


def image_text_recalls(
    image: torch.Tensor, text: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10), ties: TieRule = "standard"
) -> dict[str, float]:
    """I2T and T2I recall@k for paired rows (row i of image matches row i of text)."""
    metrics = {f"i2t_r{k}": v for k, v in recall_at_k(image, text, ks, ties).items()}
    metrics.update({f"t2i_r{k}": v for k, v in recall_at_k(text, image, ks, ties).items()})
    return metrics


def _best_match(similarity: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    return similarity.masked_fill(~matches, float("-inf")).max(dim=1, keepdim=True).values


def _rank_of_best_match(similarity: torch.Tensor, matches: torch.Tensor, ties: TieRule) -> torch.Tensor:
    """Per row, the 0-based rank of its best-scoring matching column among the non-matching ones: those
    scoring higher, and those scoring the same when they come first by index ("standard": a top-k in
    which equal scores keep index order, CLIP_benchmark's) or always ("strict")."""
    if ties not in ("standard", "strict"):
        raise ValueError(f"ties: expected 'standard' or 'strict', got {ties!r}")
    best = _best_match(similarity, matches)
    if ties == "strict":
        return ((similarity >= best) & ~matches).sum(dim=1)
    columns = torch.arange(similarity.shape[1]).unsqueeze(0)
    first_best = torch.where(matches & (similarity == best), columns, similarity.shape[1])
    first_best = first_best.min(dim=1, keepdim=True).values
    ahead = (similarity > best) | ((similarity == best) & (columns < first_best))
    return (ahead & ~matches).sum(dim=1)


def tied_queries(similarity: torch.Tensor, matches: torch.Tensor) -> int:
    """Queries whose best match scores the same as some non-matching candidate (exact duplicates)."""
    return int(((similarity == _best_match(similarity, matches)) & ~matches).any(dim=1).sum())


def _caption_matches(image: torch.Tensor, text: torch.Tensor, caption_image: torch.Tensor) -> torch.Tensor:
    if text.shape[0] != caption_image.shape[0]:
        raise ValueError(f"{text.shape[0]} captions but {caption_image.shape[0]} caption->image indices")
    matches = caption_image.unsqueeze(0) == torch.arange(image.shape[0]).unsqueeze(1)  # [images, captions]
    if not matches.any(dim=1).all():
        raise ValueError("every image needs at least one caption")
    return matches


def multi_caption_recalls(
    image: torch.Tensor,
    text: torch.Tensor,
    caption_image: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    ties: TieRule = "standard",
) -> dict[str, float]:
    """Retrieval with several captions per image (COCO/Flickr: 5). caption_image[j] is the image of
    caption j. Image-to-text: a hit at k when any of the image's captions ranks in the top k; text-to-image:
    the caption's image ranks in the top k. Cosine similarity; ties by the rule `ties`."""
    matches = _caption_matches(image, text, caption_image)
    similarity = _cosine(image, text)
    image_ranks = _rank_of_best_match(similarity, matches, ties)
    text_ranks = _rank_of_best_match(similarity.T, matches.T, ties)
    metrics = {f"i2t_r{k}": (image_ranks < k).float().mean().item() for k in ks}
    metrics.update({f"t2i_r{k}": (text_ranks < k).float().mean().item() for k in ks})
    return metrics


def benchmark_recalls(
    image: torch.Tensor, text: torch.Tensor, caption_image: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """What a benchmark table reports: the standard recalls, the strict ones beside them (`*_strict`),
    and per direction the queries whose best match is tied (`i2t_tied_queries`, `t2i_tied_queries`)."""
    metrics = multi_caption_recalls(image, text, caption_image, ks, "standard")
    strict = multi_caption_recalls(image, text, caption_image, ks, "strict")
    metrics.update({f"{name}_strict": value for name, value in strict.items()})
    matches = _caption_matches(image, text, caption_image)
    similarity = _cosine(image, text)
    metrics["i2t_tied_queries"] = float(tied_queries(similarity, matches))
    metrics["t2i_tied_queries"] = float(tied_queries(similarity.T, matches.T))
    return metrics


def zero_shot_accuracy(
    image: torch.Tensor,
    class_text: torch.Tensor,
    labels: torch.Tensor,
    ks: tuple[int, ...] = (1, 5),
    ties: TieRule = "standard",
) -> dict[str, float]:
    """Top-k accuracy of classifying images by their most similar class embedding (class_text: one row
    per class, e.g. the mean of its prompt templates' features); ties by the rule `ties`."""
    matches = labels.unsqueeze(1) == torch.arange(class_text.shape[0]).unsqueeze(0)
    ranks = _rank_of_best_match(_cosine(image, class_text), matches, ties)
    return {f"top{k}": (ranks < k).float().mean().item() for k in ks}
