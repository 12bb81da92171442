"""``python -m captum_masks scaling``: images per second of ``explain`` on 1 and more processes
of this machine, and what explaining ImageNet's validation set would cost on N such machines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

#: the methods timed by default: this package's at their defaults, and Captum's
#: IntegratedGradients as the gradient-based reference
SCALING_METHODS = (
    "MeaningfulPerturbation",
    "NeuroMaskAttr",
    "ExtremalPerturbation",
    "RISE",
    "IntegratedGradients",
)
IMAGENET_VAL = 50_000
DATA = "captum_masks.bench.suites:held_out_photos"


@dataclass
class ScalingRow:
    """One method's pace: ``seconds[p]`` to explain ``images`` photos on ``p`` processes."""

    method: str
    images: int
    seconds: dict


def measure_scaling(
    methods: Sequence[str] = SCALING_METHODS,
    processes: Sequence[int] = (1, 2),
    images: int = 6,
    cores: int | None = None,
    batch_size: int = 2,
) -> list[ScalingRow]:
    """Time ``python -m captum_masks explain`` on the first ``images`` held-out photos for each
    method, under ``torchrun`` with each number of processes, the cores split between them.

    The time is the ``explain_dataset`` call's own (what the command reports as "this run"):
    starting Python and loading the model happen once per process on a cluster too, so they
    are left out.

    Args:
        methods (sequence of str): method names that ``explain`` takes.
        processes (sequence of int): process counts.
        images (int): photos explained per measurement (at most the suite's 12).
        cores (int, optional): the cores to share (default: all of this machine's).
        batch_size (int): examples per batch, the same for every process count.

    Returns:
        list of :class:`ScalingRow`, one per method.
    """
    cores = cores or os.cpu_count() or 1
    rows = []
    for method in methods:
        seconds = {}
        for count in processes:
            with tempfile.TemporaryDirectory() as out:
                seconds[count] = _timed_run(
                    method, count, max(1, cores // count), images, out, batch_size
                )
        rows.append(ScalingRow(method, images, seconds))
    return rows


def _timed_run(
    method: str, processes: int, threads: int, images: int, out: str, batch_size: int
) -> float:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={processes}", "-m", "captum_masks", "explain", method]
    command += ["--data", DATA, "--first", str(images), "--out", out, "--target", "label"]
    command += ["--batch-size", str(batch_size), "--threads", str(threads)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    match = re.search(r"this run ([0-9.]+) s", result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return float(match.group(1))


def format_scaling(rows: Sequence[ScalingRow], machines: Sequence[int] = (1, 8, 64)) -> str:
    """Images per second per process count, and ImageNet-val's hours on N machines at the
    fastest process count, with the arithmetic."""
    counts = sorted(rows[0].seconds)
    header = ["method", *(f"images / s, {p} process{'es' if p > 1 else ''}" for p in counts)]
    header += [f"ImageNet-val on {n} machine{'s' if n > 1 else ''}" for n in machines]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        rates = {p: row.images / s for p, s in row.seconds.items()}
        best = max(rates.values())
        cells = [row.method, *(_rate(rates[p]) for p in counts)]
        cells += [
            f"{IMAGENET_VAL:,} ÷ ({_rate(best)} × {n}) s = "
            f"{IMAGENET_VAL / (best * n) / 3600:.1f} h"
            for n in machines
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rate(images_per_second: float) -> str:
    """Three significant figures, so that slow methods (RISE: 0.00486) keep their digits."""
    if images_per_second >= 100:
        return f"{images_per_second:.0f}"
    return f"{images_per_second:#.3g}"


__all__ = ["IMAGENET_VAL", "SCALING_METHODS", "ScalingRow", "format_scaling", "measure_scaling"]
