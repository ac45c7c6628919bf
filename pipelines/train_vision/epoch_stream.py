"""One worker's samples of one epoch: its spans in a seeded order, cut into blocks of shuffle_buffer
consecutive samples, each block drawn in its own seeded order; and a snapshot that a checkpoint stores,
so that a resume seeks instead of re-reading the epoch.

Blocks, not a sliding buffer: a sliding buffer keeps a few samples of every shard it has passed (a sample
survives k later draws with probability (1 - 1/B)^k), so restoring it meant re-reading ten shards at
B = shard size. A block is restored by reading it again from its start, at most the block and the start
span's samples before it (one shard at B = shard size), and shuffling it with its own seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from pipelines.train_vision.records import JoinedSample, LoaderSettings

Position = tuple[int, int]  # (span index in the epoch's order, training samples of that span before it)


class EpochStream:
    """Iterate it for the epoch's samples; snapshot() between two of them says where it is."""

    def __init__(
        self,
        spans,
        sidecars: dict[str, str],
        settings: LoaderSettings,
        rank: int,
        epoch: int,
        span_samples: Callable[..., Iterator[JoinedSample]],  # data.span_samples: a span's training samples
    ):
        self._span_samples = span_samples
        self.sidecars, self.settings = sidecars, settings
        self.seed = f"{settings.seed}/{epoch}/{rank}"
        self.order = list(spans)
        random.Random(self.seed).shuffle(self.order)
        self.read_at: Position = (0, 0)  # where the next block starts
        self.block: list[JoinedSample] = []
        self.block_info: dict | None = None  # number, start, length of the block being drawn
        self.previous: dict | None = None  # the block before it (a batch may straddle the two)
        self.taken = 0  # samples of the block drawn
        self._open = None  # ((span, samples of it read), its iterator): the span being read

    def _read(self, start: Position, count: int) -> tuple[list[JoinedSample], Position]:
        """count samples from start (fewer at the epoch's end) and the position after them. The span being
        read stays open between calls, so consecutive blocks read each sample once; a block that starts
        elsewhere (a restore) reads its span from the beginning up to the start."""
        span, offset = start
        samples: list[JoinedSample] = []
        while len(samples) < count and span < len(self.order):
            if self._open is None or self._open[0] != (span, offset):
                iterator = iter(self._span_samples(self.order[span], self.sidecars, self.settings))
                for _ in range(offset):
                    next(iterator)
            else:
                iterator = self._open[1]
            for sample in iterator:
                samples.append(sample)
                offset += 1
                if len(samples) == count:
                    self._open = ((span, offset), iterator)
                    return samples, (span, offset)
            span, offset, self._open = span + 1, 0, None
        return samples, (span, offset)

    def _block(self, info: dict) -> list[JoinedSample]:
        samples, _ = self._read(tuple(info["start"]), info["length"])
        random.Random(f"{self.seed}/{info['number']}").shuffle(samples)
        return samples

    def __iter__(self) -> Iterator[JoinedSample]:
        while True:
            if self.taken == len(self.block):
                number = self.block_info["number"] + 1 if self.block_info else 0
                start = self.read_at
                samples, self.read_at = self._read(start, self.settings.shuffle_buffer)
                if not samples:
                    return
                self.previous = self.block_info
                self.block_info = {"number": number, "start": list(start), "length": len(samples)}
                random.Random(f"{self.seed}/{number}").shuffle(samples)
                self.block, self.taken = samples, 0
            self.taken += 1
            yield self.block[self.taken - 1]

    def snapshot(self) -> dict:
        return {
            "read_at": list(self.read_at),
            "block": self.block_info,
            "previous": self.previous,
            "taken": self.taken,
        }

    def restore(self, snapshot: dict, carried: int) -> list[JoinedSample]:
        """Puts the stream where snapshot says and returns the last `carried` samples it had drawn (a
        batch's leftovers the loader holds): the block is read again, and the one before only when those
        samples reach into it."""
        self.read_at = tuple(snapshot["read_at"])
        self.block_info, self.previous, self.taken = (
            snapshot["block"],
            snapshot["previous"],
            snapshot["taken"],
        )
        self.block = self._block(self.block_info) if self.block_info else []
        drawn = self.block[: self.taken]
        if carried > len(drawn) and self.previous:
            drawn = self._block(self.previous) + drawn
        if carried > len(drawn):
            raise ValueError(f"a checkpoint's data position carries {carried} samples, more than were drawn")
        return drawn[len(drawn) - carried :] if carried else []
