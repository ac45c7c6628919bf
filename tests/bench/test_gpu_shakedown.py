"""The GPU shakedown's dry run: every check at toy shapes on CPU, as the GPU machine would run them at
paper shapes, so that the script cannot rot between the rare times a GPU is at hand."""

from __future__ import annotations

import json

import pytest

from bench.gpu_shakedown import CHECKS, main
from bench.paper_shapes import peak_bf16_tflops


def test_the_peak_table_reads_the_gpu_name_and_knows_when_it_does_not_know():
    assert peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("NVIDIA H200") == 989.0
    assert peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_bf16_tflops("Some Future GPU") is None  # no MFU rather than one against a guess


@pytest.mark.e2e  # two minutes of toy runs: with the end-to-end tests, not the unit tests' budget
def test_every_check_runs_at_toy_shapes_on_cpu(tmp_path):
    assert main(["--out", str(tmp_path), "--tiny"]) == 0, (tmp_path / "shakedown.md").read_text()
    report = json.loads((tmp_path / "shakedown.json").read_text())
    results = {r["check"]: r for r in report["checks"]}
    assert list(results) == list(CHECKS)
    assert all(r["status"] == "ok" for r in results.values()), {n: r["notes"] for n, r in results.items()}
    assert results["tests"]["rows"][0]["passed"] > 0
    assert results["vision_mfu"]["rows"][0]["figure"] > 0
    assert results["embed"]["rows"][0]["captions_per_s"] > 0
    finetune = results["finetune"]["rows"][0]
    assert finetune["step_s"] > 0 and len(finetune["losses"]) == 3
    loop = results["vision_loop"]["rows"][0]
    assert loop["loss_last_tenth"] < loop["loss_first_tenth"] and loop["bit_exact"]
    assert results["two_ranks"]["rows"][0]["loss_gap"] < 1e-5  # gloo on CPU: the same arithmetic
    table = (tmp_path / "shakedown.md").read_text()
    assert all(f"| {name} | ok |" in table for name in CHECKS)
