"""Groups the requests of one Triton `execute` call into pipeline batches."""

from __future__ import annotations

from typing import Callable, Hashable, Sequence, TypeVar

T = TypeVar("T")


def group_compatible(items: Sequence[T], key: Callable[[T], Hashable], max_size: int) -> list[list[int]]:
    """Indices of items grouped by key, each group at most max_size long, in order of first arrival."""
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    groups: dict[Hashable, list[list[int]]] = {}
    ordered: list[list[int]] = []
    for index, item in enumerate(items):
        chunks = groups.setdefault(key(item), [])
        if not chunks or len(chunks[-1]) == max_size:
            chunks.append([])
            ordered.append(chunks[-1])
        chunks[-1].append(index)
    return ordered
