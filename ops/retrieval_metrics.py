"""Retrieval metrics over embedding matrices."""

from __future__ import annotations

import torch


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
    queries: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[int, float]:
    """Query i's match is target i: the share of queries whose match ranks in the top k by cosine
    similarity (ties resolved against the match: it must beat every other target strictly to rank ahead)."""
    if queries.shape[0] != targets.shape[0] or queries.ndim != 2 or targets.ndim != 2:
        raise ValueError(
            f"expected [n, d] queries and targets, got {tuple(queries.shape)} and {tuple(targets.shape)}"
        )
    similarity = (
        torch.nn.functional.normalize(queries.float(), dim=-1)
        @ torch.nn.functional.normalize(targets.float(), dim=-1).T
    )
    others_ahead = _others_ahead(similarity)
    return {k: (others_ahead < k).float().mean().item() for k in ks}


def _others_ahead(similarity: torch.Tensor) -> torch.Tensor:
    """Per row, the rank of its diagonal entry: how many other columns score at least as high."""
    return (similarity >= similarity.diagonal().unsqueeze(1)).sum(dim=1) - 1


def top1_hits(similarity: torch.Tensor) -> list[bool]:
    """Per row of a square similarity matrix, whether its own column (the diagonal) beats every other
    strictly: R@1 per query, with ties counted as misses as recall_at_k counts them."""
    return (_others_ahead(similarity) == 0).tolist()


def image_text_recalls(
    image: torch.Tensor, text: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """I2T and T2I recall@k for paired rows (row i of image matches row i of text)."""
    metrics = {f"i2t_r{k}": v for k, v in recall_at_k(image, text, ks).items()}
    metrics.update({f"t2i_r{k}": v for k, v in recall_at_k(text, image, ks).items()})
    return metrics


def _rank_of_best_match(similarity: torch.Tensor, matches: torch.Tensor) -> torch.Tensor:
    """Per row, the 0-based rank of its best-scoring matching column, ties counted against it: the number
    of non-matching columns scoring at least as high as that match."""
    best_match = similarity.masked_fill(~matches, float("-inf")).max(dim=1, keepdim=True).values
    return ((similarity >= best_match) & ~matches).sum(dim=1)


def multi_caption_recalls(
    image: torch.Tensor, text: torch.Tensor, caption_image: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Retrieval with several captions per image (COCO/Flickr: 5). caption_image[j] is the image of
    caption j. Image-to-text: a hit at k when any of the image's captions ranks in the top k; text-to-image:
    the caption's image ranks in the top k. Cosine similarity; ties count as misses."""
    if text.shape[0] != caption_image.shape[0]:
        raise ValueError(f"{text.shape[0]} captions but {caption_image.shape[0]} caption->image indices")
    similarity = (
        torch.nn.functional.normalize(image.float(), dim=-1)
        @ torch.nn.functional.normalize(text.float(), dim=-1).T
    )
    matches = caption_image.unsqueeze(0) == torch.arange(image.shape[0]).unsqueeze(1)  # [images, captions]
    if not matches.any(dim=1).all():
        raise ValueError("every image needs at least one caption")
    image_ranks = _rank_of_best_match(similarity, matches)
    text_ranks = _rank_of_best_match(similarity.T, matches.T)
    metrics = {f"i2t_r{k}": (image_ranks < k).float().mean().item() for k in ks}
    metrics.update({f"t2i_r{k}": (text_ranks < k).float().mean().item() for k in ks})
    return metrics


def zero_shot_accuracy(
    image: torch.Tensor, class_text: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy of classifying images by their most similar class embedding (class_text: one row
    per class, e.g. the mean of its prompt templates' features). Ties count as misses."""
    similarity = (
        torch.nn.functional.normalize(image.float(), dim=-1)
        @ torch.nn.functional.normalize(class_text.float(), dim=-1).T
    )
    matches = labels.unsqueeze(1) == torch.arange(class_text.shape[0]).unsqueeze(0)
    ranks = _rank_of_best_match(similarity, matches)
    return {f"top{k}": (ranks < k).float().mean().item() for k in ks}
