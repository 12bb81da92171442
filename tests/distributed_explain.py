"""Launched by tests/test_dataset_explanation.py under ``torchrun`` (gloo, CPU), or imported for
its problem: ``distributed_explain.py OUT [--kill-rank R --kill-after K] [--journal DIR]``.

Every rank explains its share of the same seeded dataset into OUT. With ``--kill-rank``, that rank
SIGKILLs itself when it is about to explain its (K+1)-th batch, as a crashed machine would. With
``--journal``, each rank appends the size of every batch it explains to ``DIR/rank-R.txt``.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
from pathlib import Path

import torch
from torch import nn

from captum_masks import MeaningfulPerturbation, Optimization, explain_dataset
from captum_masks._engine.distributed import rank_and_world_size

N_EXAMPLES = 22
BATCH_SIZE = 2
ATTRIBUTE_KWARGS = {"optimization": Optimization(n_iter=8, seed=3)}


class SeededImages(torch.utils.data.Dataset):
    """Item i is made from seed i when it is read: a dataset that is never held whole."""

    def __len__(self) -> int:
        return N_EXAMPLES

    def __getitem__(self, index: int) -> tuple:
        generator = torch.Generator().manual_seed(index)
        image = torch.rand(3, 12, 12, generator=generator, dtype=torch.float64)
        mask = torch.zeros(12, 12)
        mask[2:6, 3:9] = 1
        return image, index % 3, mask


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    return model.double().eval()


def tiny_float_model() -> nn.Module:
    """The same network in float32, for images read from files."""
    return tiny_model().float()


class RecordedMeaningfulPerturbation(MeaningfulPerturbation):
    """MeaningfulPerturbation that can log its batches and die; the private attributes keep the
    manifest the same as a run without them."""

    def __init__(self, model: nn.Module, log: str | None, kill_after: int | None) -> None:
        super().__init__(model)
        self._log, self._kill_after, self._calls = log, kill_after, 0

    @functools.wraps(MeaningfulPerturbation.attribute)  # its signature, return_history included
    def attribute(self, inputs, target=None, **kwargs):
        if self._kill_after is not None and self._calls == self._kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        self._calls += 1
        result = super().attribute(inputs, target=target, **kwargs)
        if self._log is not None:
            rank, _ = rank_and_world_size()
            with open(Path(self._log) / f"rank-{rank}.txt", "a") as log:
                log.write(f"{inputs.shape[0]}\n")
        return result


def run(out: str, log: str | None = None, kill_after: int | None = None):
    method = RecordedMeaningfulPerturbation(tiny_model(), log, kill_after)
    return explain_dataset(
        method,
        SeededImages(),
        out,
        target="label",
        batch_size=BATCH_SIZE,
        attribute_kwargs=ATTRIBUTE_KWARGS,
        show_progress=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--kill-after", type=int, default=None)
    parser.add_argument("--journal", default=None)
    args = parser.parse_args()
    torch.distributed.init_process_group("gloo")
    torch.set_num_threads(1)
    rank, _ = rank_and_world_size()
    run(args.out, args.journal, args.kill_after if rank == args.kill_rank else None)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
