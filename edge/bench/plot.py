"""``--plot FILE``: a latency histogram per model and a bar chart comparing them (matplotlib, optional)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.bench.core import ModelResult
from edge.errors import EdgeError


class PlotUnavailableError(EdgeError):
    """matplotlib is not installed (it is an optional extra on the device)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailableError(
            "--plot needs matplotlib, which is not installed (it is optional on the device)",
            "pip install 'edge-ml-toolkit[plot]', or drop --plot and plot the --json output elsewhere",
        ) from exc
    matplotlib.use("Agg")  # files only: boards have no display
    import matplotlib.pyplot as plt

    return plt


def display_name(r: ModelResult) -> str:
    name = r.loaded.requested_path.name.removesuffix(".tflite")
    return name + " (CPU twin)" if r.loaded.path != r.loaded.requested_path else name


def plot(results: Sequence[ModelResult], path: Path, title: str = "edge-bench") -> Path:
    plt = _pyplot()
    n = len(results)
    cols = min(n, 3)
    rows = math.ceil(n / cols) + 1
    fig = plt.figure(figsize=(4.2 * cols, 2.8 * rows), dpi=80)
    names = [display_name(r) for r in results]
    for i, (r, name) in enumerate(zip(results, names)):
        ax = fig.add_subplot(rows, cols, i + 1)
        # Up to p99 only: one preempted invoke at 50x the median would squash every other bar to the left.
        top = r.stats.p99 * 1.05 if r.stats.p99 > r.stats.min else r.stats.max + 1e-3
        shown = [x for x in r.samples_ms if x <= top]
        ax.hist(shown, bins=min(40, max(5, len(shown) // 5)), range=(r.stats.min, top), color=f"C{i}")
        if len(shown) < len(r.samples_ms):
            ax.text(
                0.98,
                0.95,
                f"{len(r.samples_ms) - len(shown)} above {top:.2f} ms not shown",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
            )
        for q, style in ((r.stats.p50, "-"), (r.stats.p99, ":")):
            ax.axvline(q, color="k", linestyle=style, linewidth=1)
        ax.set_title(f"{name}\n{r.loaded.delegate}, p50 {r.stats.p50:.2f} ms", fontsize=8)
        ax.set_xlabel("latency (ms)", fontsize=8)
        ax.set_ylabel("invokes", fontsize=8)
        ax.tick_params(labelsize=7)
    ax = fig.add_subplot(rows, 1, rows)
    p50 = [r.stats.p50 for r in results]
    err = [[0 for _ in results], [r.stats.p99 - r.stats.p50 for r in results]]
    ax.barh(range(n), p50, xerr=err, color=[f"C{i}" for i in range(n)], capsize=3)
    ax.set_yticks(range(n), [f"{nm} ({r.loaded.delegate})" for nm, r in zip(names, results)], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("p50 latency (ms), whisker to p99", fontsize=8)
    for i, r in enumerate(results):
        ax.text(r.stats.p99, i, f"  p50 x{r.stats.p50 / results[0].stats.p50:.2f}", va="center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
