"""Launched by tests/test_amortized.py: ``torchrun --nproc_per_node=2 distributed_fit.py OUT``.

Every process trains the same explainer on its shard of the same DataLoader (gloo, CPU); rank 0
saves the result to OUT, which the test compares with a single-process run.
"""

import sys

import torch
import torch.distributed as dist
from amortized_problems import Quadrants, quadrant_data
from torch.utils.data import DataLoader, TensorDataset

from captum_masks import AmortizedExplainer


def main(out: str) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    # float64, so the different summation order of two half batches stays invisible
    x, y = quadrant_data(64, seed=0, dtype=torch.float64)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    explainer = AmortizedExplainer(Quadrants(), 4, width=8, depth=1)
    explainer.fit(loader, epochs=2, patience=None, show_progress=False, checkpoint=out + ".ckpt")
    if dist.get_rank() == 0:
        explainer.save(out)
    # both ranks leave together: a rank tearing gloo down while the other still saves can abort
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
