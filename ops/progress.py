"""Progress lines a user can follow in `ray job logs` or a terminal: plain lines, flushed, no carriage
returns (a tqdm bar's redraws arrive in a job log as one garbled line).

  [train_vision] step 400/3200 (12%): loss 2.314, 812 images/s, elapsed 0:08:12, ETA 0:57:30
  [embed] shard 00012 done: 3/40 shards, 30,720 captions, 812 captions/s, elapsed 0:00:38, ETA 0:07:50
"""

from __future__ import annotations

import time
from collections.abc import Callable


def clock_text(seconds: float) -> str:
    """0:08:12 (hours uncapped: a 70-hour run reads 70:00:00)."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def lines_every(max_steps: int, lines: int = 20, most_steps: int = 100) -> int:
    """Steps between two progress lines: about `lines` lines a run, and one at least every `most_steps`."""
    return max(1, min(most_steps, round(max_steps / lines)))


def _say(text: str) -> None:
    print(text, flush=True)


class StepProgress:
    """A trainer's line every `every` steps, at its first step and at its last: step / max_steps, loss,
    throughput over the steps this process ran, elapsed and ETA; and lines for checkpoints and evals."""

    def __init__(
        self,
        stage: str,
        start_step: int,
        max_steps: int,
        unit: str,
        every: int | None = None,
        say: Callable[[str], None] = _say,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.stage, self.start_step, self.max_steps, self.unit = stage, start_step, max_steps, unit
        self.every = every or lines_every(max_steps)
        self.say, self.clock = say, clock
        self.started, self.items = clock(), 0.0

    def step(self, step: int, loss: float, items: float) -> None:
        """After step `step`, which trained on `items` (images, pairs) across all workers."""
        self.items += items
        if not (step % self.every == 0 or step == self.start_step + 1 or step >= self.max_steps):
            return
        elapsed = self.clock() - self.started
        done = step - self.start_step
        eta = elapsed / done * (self.max_steps - step) if done else 0.0
        self.say(
            f"[{self.stage}] step {step}/{self.max_steps} ({100 * step / self.max_steps:.0f}%): "
            f"loss {loss:.4f}, {self.items / max(elapsed, 1e-9):,.1f} {self.unit}/s, "
            f"elapsed {clock_text(elapsed)}, ETA {clock_text(eta)}"
        )

    def checkpoint(self, step: int) -> None:
        self.say(f"[{self.stage}] step {step}: checkpoint saved")

    def evaluated(self, step: int, metrics: dict[str, float]) -> None:
        shown = ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items()))
        self.say(f"[{self.stage}] step {step}: held-out {shown}")


class ShardProgress:
    """A line per finished shard: shards and rows done, rows/s, elapsed and ETA. `total_rows`, where
    known, gives the ETA by rows; else by shards."""

    def __init__(
        self,
        stage: str,
        total_shards: int,
        unit: str,
        total_rows: int | None = None,
        say: Callable[[str], None] = _say,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.stage, self.total_shards, self.unit, self.total_rows = stage, total_shards, unit, total_rows
        self.say, self.clock = say, clock
        self.started, self.shards, self.rows = clock(), 0, 0

    def shard_done(self, shard: str, rows: int) -> None:
        self.shards += 1
        self.rows += rows
        elapsed = self.clock() - self.started
        rate = self.rows / max(elapsed, 1e-9)
        if self.total_rows is not None:
            eta = (self.total_rows - self.rows) / max(rate, 1e-9)
        else:
            eta = elapsed / self.shards * (self.total_shards - self.shards)
        self.say(
            f"[{self.stage}] shard {shard} done: {self.shards}/{self.total_shards} shards, "
            f"{self.rows:,} {self.unit}, {rate:,.1f} {self.unit}/s, "
            f"elapsed {clock_text(elapsed)}, ETA {clock_text(eta)}"
        )
