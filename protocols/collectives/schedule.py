"""Interim: replaced by the schedule module of the wt-cproto branch at merge."""

from __future__ import annotations


def shards(length: int, n: int) -> list[tuple[int, int]]:
    base, extra = divmod(length, n)
    out, at = [], 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append((at, at + size))
        at += size
    return out


def parts(start: int, stop: int, part_len: int) -> list[tuple[int, int]]:
    return [(a, min(a + part_len, stop)) for a in range(start, stop, part_len)]
