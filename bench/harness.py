"""Timing helpers: variants are run in interleaved rounds and compared by median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Op = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Result:
    """Operations per second of one variant (median of its rounds)."""

    name: str
    ops_per_s: float


async def compare(variants: dict[str, Op], *, iterations: int, rounds: int = 5) -> list[Result]:
    """Run every variant `iterations` times per round, rounds interleaved to share drift."""
    for op in variants.values():  # warm-up: pool, prepared statements, caches
        for _ in range(max(20, iterations // 10)):
            await op()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, op in variants.items():
            started = time.perf_counter()
            for _ in range(iterations):
                await op()
            samples[name].append(iterations / (time.perf_counter() - started))
    return [Result(name, statistics.median(s)) for name, s in samples.items()]


def table(title: str, results: list[Result], baseline: str) -> str:
    """A markdown table of the results, each as a ratio of the baseline's time per op."""
    base = next(r for r in results if r.name == baseline).ops_per_s
    lines = [
        f"### {title}",
        "",
        "| variant | ops/s | time vs. " + baseline + " |",
        "|---|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.ops_per_s:,.0f} | {base / r.ops_per_s:.2f}x |")
    return "\n".join(lines) + "\n"
