"""Recall@k for image-text retrieval: exact on hand-made cases, at chance on noise."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ops.retrieval_metrics import image_text_recalls, recall_at_k, top1_hits


def test_recall_at_k_on_a_hand_made_case():
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 1.0]])
    # q0 -> t0 first; q1 -> t1 ranks behind t2 (second); q2 -> t2 first.
    recalls = recall_at_k(queries, targets, (1, 2))
    assert abs(recalls[1] - 2 / 3) < 1e-6 and recalls[2] == 1.0


def test_identical_features_recall_everything_and_noise_is_near_chance():
    torch.manual_seed(0)
    features = torch.randn(50, 32)
    metrics = image_text_recalls(features, features)
    assert metrics["i2t_r1"] == metrics["t2i_r1"] == 1.0
    noise = image_text_recalls(torch.randn(400, 32), torch.randn(400, 32), ks=(10,))
    assert abs(noise["i2t_r10"] - 10 / 400) < 0.03


def _brute_force(similarity: torch.Tensor, caption_image: list[int], k: int) -> tuple[float, float]:
    """Reference: sort each row and look for a match in the first k (ties against the match)."""
    images, captions = similarity.shape
    i2t_hits = 0
    for i in range(images):
        own = [j for j in range(captions) if caption_image[j] == i]
        best = max(similarity[i, j].item() for j in own)
        ahead = sum(1 for j in range(captions) if j not in own and similarity[i, j].item() >= best)
        i2t_hits += ahead < k
    t2i_hits = 0
    for j in range(captions):
        own = similarity[caption_image[j], j].item()
        ahead = sum(1 for i in range(images) if i != caption_image[j] and similarity[i, j].item() >= own)
        t2i_hits += ahead < k
    return i2t_hits / images, t2i_hits / captions


def test_multi_caption_recalls_match_a_brute_force_reference_on_random_data():
    from ops.retrieval_metrics import multi_caption_recalls

    torch.manual_seed(0)
    image, text = torch.randn(20, 8), torch.randn(100, 8)
    caption_image = [j // 5 for j in range(100)]  # five captions per image, as COCO
    metrics = multi_caption_recalls(image, text, torch.tensor(caption_image), ks=(1, 5, 10))
    similarity = torch.nn.functional.normalize(image, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
    for k in (1, 5, 10):
        i2t, t2i = _brute_force(similarity, caption_image, k)
        assert abs(metrics[f"i2t_r{k}"] - i2t) < 1e-6 and abs(metrics[f"t2i_r{k}"] - t2i) < 1e-6


def test_any_caption_counts_for_image_to_text_and_ties_count_against():
    from ops.retrieval_metrics import multi_caption_recalls, zero_shot_accuracy

    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # image 0 owns captions 0 and 1; caption 1 equals image 0, caption 0 points at image 1.
    text = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    metrics = multi_caption_recalls(image, text, torch.tensor([0, 0, 1]), ks=(1,))
    assert metrics["i2t_r1"] == 0.5  # image 1 ties caption 0 (not its own) with caption 2: a miss
    assert abs(metrics["t2i_r1"] - 2 / 3) < 1e-6  # caption 0 prefers image 1: a miss
    accuracy = zero_shot_accuracy(
        image, torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.0, -1.0]]), torch.tensor([0, 2])
    )
    assert accuracy == {"top1": 0.5, "top5": 1.0}


def test_top1_hits_count_ties_as_misses_and_agree_with_recall_at_1():
    # Rows 0 and 1 tie (two identical captions): neither is a hit, although argmax would give row 0 one.
    similarity = torch.tensor([[0.9, 0.9, 0.1], [0.9, 0.9, 0.1], [0.2, 0.3, 0.8]])
    assert top1_hits(similarity) == [False, False, True]
    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(40, 8, generator=generator), torch.randn(40, 8, generator=generator)
    text[:20] = image[:20] + 0.5 * torch.randn(20, 8, generator=generator)
    cosine = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    hits = top1_hits(cosine)
    assert 0 < sum(hits) < 40
    assert abs(sum(hits) / 40 - recall_at_k(image, text, (1,))[1]) < 1e-6


def _clip_benchmark_recall(scores: torch.Tensor, positive_pairs: torch.Tensor, k: int) -> float:
    """CLIP_benchmark's convention, written out: a query hits at k when one of its positives is among
    torch.topk's k indices (equal scores in index order)."""
    top = torch.topk(scores, k, dim=1).indices
    found = (F.one_hot(top, scores.shape[1]) * positive_pairs.unsqueeze(1)).sum(dim=(1, 2))
    return (found > 0).float().mean().item()


def test_standard_ties_match_clip_benchmark_and_strict_ones_count_duplicates_as_misses():
    from ops.retrieval_metrics import benchmark_recalls, multi_caption_recalls

    generator = torch.Generator().manual_seed(0)
    image, text = torch.randn(30, 8, generator=generator), torch.randn(150, 8, generator=generator)
    caption_image = torch.tensor([j // 5 for j in range(150)])
    text[7] = text[42]  # COCO-style exact duplicate captions of images 1 and 8
    image[20] = image[3]  # and a duplicate image
    positives = caption_image.unsqueeze(0) == torch.arange(30).unsqueeze(1)
    similarity = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    standard = multi_caption_recalls(image, text, caption_image, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert standard[f"i2t_r{k}"] == _clip_benchmark_recall(similarity, positives.float(), k)
        assert standard[f"t2i_r{k}"] == _clip_benchmark_recall(similarity.T, positives.T.float(), k)

    # two identical captions of two images, two images with one caption each: 0.5 vs 0.0
    pair = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    report = benchmark_recalls(pair, same, torch.tensor([0, 1]), ks=(1,))
    assert report["t2i_r1"] == 0.5 and report["t2i_r1_strict"] == 0.0
    assert report["i2t_r1"] == 0.5 and report["i2t_r1_strict"] == 0.0
    assert report["i2t_tied_queries"] == report["t2i_tied_queries"] == 2
    distinct = benchmark_recalls(pair, pair, torch.tensor([0, 1]), ks=(1,))
    assert distinct["t2i_r1"] == distinct["t2i_r1_strict"] == 1.0 and distinct["t2i_tied_queries"] == 0
