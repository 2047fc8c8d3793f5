"""Where the fuzzer's choices come from: one small interface, three implementations.

The case generator (tests.fuzz.cases) asks a `Source` for every choice it makes, so the same
generator runs on
- `RandomSource`: a seeded `random.Random` (the long run: fast, reproducible from the seed);
- `HypothesisSource`: hypothesis draws (the CI test: failures shrink to a small case);
- `AtherisSource`: atheris' FuzzedDataProvider (coverage-guided fuzzing, when atheris is
  installed: it is not a dependency of the project).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["AtherisSource", "HypothesisSource", "RandomSource", "Source"]

T = TypeVar("T")


class Source(Protocol):
    """The choices a case is made of. Bounds are inclusive."""

    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]."""
        ...

    def chance(self, p: float) -> bool:
        """True with probability about `p`."""
        ...

    def raw(self, n: int) -> bytes:
        """`n` arbitrary bytes (zeros once a finite source runs dry)."""
        ...


def choice(source: Source, items: Sequence[T]) -> T:
    """One of `items` (not empty)."""
    return items[source.integer(0, len(items) - 1)]


def weighted(source: Source, items: Sequence[tuple[int, T]]) -> T:
    """One of `items` by its integer weight."""
    total = sum(w for w, _ in items)
    pick = source.integer(0, total - 1)
    for w, item in items:
        if pick < w:
            return item
        pick -= w
    raise AssertionError("unreachable")


class RandomSource:
    """Choices from a seeded `random.Random`."""

    def __init__(self, seed: int | random.Random) -> None:
        self.rng = seed if isinstance(seed, random.Random) else random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def raw(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class HypothesisSource:
    """Choices drawn from a hypothesis `data` object (`st.data()`), so a failing example
    shrinks: smaller integers, fewer chances taken, zero bytes."""

    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self._data = data
        self._st = st

    def integer(self, lo: int, hi: int) -> int:
        return int(self._data.draw(self._st.integers(lo, hi)))

    def chance(self, p: float) -> bool:
        # An integer draw shrinks towards 0, i.e. towards "not taken".
        return int(self._data.draw(self._st.integers(0, 9999))) >= round((1.0 - p) * 10_000)

    def raw(self, n: int) -> bytes:
        if n <= 64:
            return bytes(self._data.draw(self._st.binary(min_size=n, max_size=n)))
        # Long byte strings from a drawn seed: hypothesis' budget per example is a few KiB.
        return random.Random(self.integer(0, 2**32 - 1)).randbytes(n)


class AtherisSource:
    """Choices consumed from an atheris `FuzzedDataProvider` (the fuzzer's input bytes); a
    provider that runs dry answers the low bounds."""

    def __init__(self, provider: Any) -> None:
        self._fdp = provider

    def integer(self, lo: int, hi: int) -> int:
        return int(self._fdp.ConsumeIntInRange(lo, hi))

    def chance(self, p: float) -> bool:
        return bool(self._fdp.ConsumeProbability() < p)

    def raw(self, n: int) -> bytes:
        data = bytes(self._fdp.ConsumeBytes(n))
        return data + bytes(n - len(data))

    def remaining(self) -> int:
        """Bytes of input left."""
        return int(self._fdp.remaining_bytes())
