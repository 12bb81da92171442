"""Measurement tables written for the docs: each file names the command that wrote it, the
machine and the date once, at its head, so that rerunning the command refreshes it."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import torch


def machine() -> str:
    """The processor, its cores and torch's threads, e.g. ``AMD EPYC 7B13, 2 cores (2 torch
    threads), torch 2.14.1``."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        if names:
            model = names[0].split(":", 1)[1].strip()
    return (
        f"{model}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
        f"torch {torch.__version__.split('+')[0]}"
    )


def write_table(path: str | os.PathLike, command: str, table: str) -> None:
    """Write ``table`` (Markdown) to ``path`` under a head that names ``command``, the machine
    and today's date.

    Examples::

        >>> write_table("docs/tables/synthetic.md", "python -m captum_masks benchmark", table)
    """
    head = (
        f"<!-- written by `{command}`: rerun it to refresh this file -->\n\n"
        f"Measured on {machine()}, {datetime.date.today().isoformat()}, by `{command}`.\n\n"
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(head + table.rstrip() + "\n")


def add_table_argument(parser: argparse.ArgumentParser) -> None:
    """``--table PATH`` on a command that prints a measurement table."""
    parser.add_argument(
        "--table",
        default=None,
        metavar="PATH",
        help="also write the table to this Markdown file, under a head that names the command, "
        "the machine and the date (the docs include such files)",
    )


def print_table(args: argparse.Namespace, command: str, table: str) -> None:
    """Print a measurement table, and write it where ``--table`` says."""
    print(table)
    if args.table is not None:
        write_table(args.table, command, table)


__all__ = ["add_table_argument", "machine", "print_table", "write_table"]
