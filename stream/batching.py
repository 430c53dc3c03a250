"""Many streams' spotters, one engine call per model per round, no thread per stream.

Each stream's next frame is an `OnlineSpotter.steps()` generator that yields the model calls it needs
(`("gim", windows)`, `("fedn", x)`). A round advances every generator to its next request; all GIM requests of the
round become one `gim` call on the concatenated windows and all FEDN requests one `fedn_batch` call on the stacked
windows, and each generator gets its slice back. Rounds repeat until every generator has returned its updates.
Built with `buckets` (for backends compiled per batch size; today's engines all take any batch), the batch is
padded up to a bucket, so the engine only ever sees the shapes it was compiled for.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from fes_live.models.online import Request, Steps

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def bucket(n: int, buckets: Sequence[int] = BUCKETS) -> int:
    """The smallest bucket that holds n (n itself past the largest: the caller splits first)."""
    return next((b for b in buckets if b >= n), n)


def padded_call(fn: Callable, x: np.ndarray, buckets: Sequence[int] | None) -> tuple[np.ndarray, ...]:
    """fn on x (B, ...) with B padded with zeros up to a bucket (and split at the largest), outputs cut back to B."""
    if not buckets or len(x) == 0:
        return tuple(np.asarray(o) for o in fn(x))
    outs: list[tuple[np.ndarray, ...]] = []
    for lo in range(0, len(x), buckets[-1]):
        part = x[lo:lo + buckets[-1]]
        b = bucket(len(part), buckets)
        if b != len(part):
            part = np.concatenate([part, np.zeros((b - len(part), *part.shape[1:]), dtype=part.dtype)])
        outs.append(tuple(np.asarray(o)[:min(b, len(x) - lo)] for o in fn(part)))
    return tuple(np.concatenate(field) for field in zip(*outs))


class StepBatcher:
    """Answers the model requests of many `steps()` generators together (see the module docstring)."""

    def __init__(self, gim: Callable, fedn: Callable | None = None, fedn_batch: Callable | None = None,
                 buckets: Sequence[int] | None = None):
        self.gim = gim
        self.fedn_batch = fedn_batch or (self._fedn_one_by_one(fedn) if fedn is not None else None)
        self.buckets = tuple(buckets) if buckets else None
        self.calls = {"gim": 0, "fedn": 0}   # engine calls made (for stats and tests)
        self.items = {"gim": 0, "fedn": 0}   # windows answered

    @classmethod
    def for_engine(cls, engine) -> "StepBatcher":
        """The batcher of an `Engine` (or a test double with `gim` and optionally `fedn` / `fedn_batch`)."""
        fedn = engine.fedn if getattr(engine, "has_fedn", hasattr(engine, "fedn")) else None
        return cls(engine.gim, fedn, getattr(engine, "fedn_batch", None) if fedn is not None else None)

    @staticmethod
    def _fedn_one_by_one(fedn: Callable) -> Callable:
        def run(x: np.ndarray) -> tuple[np.ndarray, ...]:
            outs = [tuple(np.asarray(o) for o in fedn(x[i:i + 1])) for i in range(len(x))]
            return tuple(np.concatenate(field) for field in zip(*outs))
        return run

    def run(self, jobs: list[Steps]) -> list[Any]:
        """Each job's return value (its updates), or the exception it raised (a bad frame fails alone)."""
        results: list[Any] = [None] * len(jobs)
        waiting: dict[int, Request] = {}

        def advance(i: int, value: Any) -> None:
            try:
                waiting[i] = jobs[i].send(value)
            except StopIteration as done:
                results[i] = done.value
            except Exception as e:  # noqa: BLE001 - a frame the spotter rejects fails its stream's job alone
                results[i] = e

        for i in range(len(jobs)):
            advance(i, None)
        while waiting:
            current = dict(waiting)
            waiting.clear()
            for kind in ("gim", "fedn"):
                ids = [i for i, (k, _) in current.items() if k == kind]
                if ids:
                    for i, answer in zip(ids, self._answer(kind, [current[i][1] for i in ids])):
                        advance(i, answer)
        return results

    def _answer(self, kind: str, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        """One engine call for every request of a kind; each request's slice of the outputs."""
        sizes = [len(x) for x in inputs]
        fn = self.gim if kind == "gim" else self.fedn_batch
        if fn is None:
            raise ValueError("a spotter asked for FEDN but the engine has none")
        outs = padded_call(fn, np.concatenate(inputs), self.buckets)
        self.calls[kind] += 1
        self.items[kind] += sum(sizes)
        cuts = np.cumsum(sizes)[:-1]
        per_field = [np.split(o, cuts) for o in outs]
        return [tuple(field[j] for field in per_field) for j in range(len(inputs))]
