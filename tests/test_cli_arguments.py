"""The command line's arguments: every choice listed in --help and checked by argparse, a user's
mistake a one-line error (never a traceback), --threads applied."""

import pytest
import torch

from captum_masks.bench.cli import main
from captum_masks.bench.runners import ALL_METHODS
from captum_masks.bench.speed import SPEED_METHODS
from captum_masks.bench.suites import SUITES
from captum_masks.bench.zoo import SAMPLE_IMAGES


def help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def error_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(command))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "command, choices",
    [
        (("demo",), SAMPLE_IMAGES),
        (("speed",), SPEED_METHODS),
        (("benchmark",), ALL_METHODS + SUITES),
    ],
    ids=["demo", "speed", "benchmark"],
)
def test_help_lists_every_choice_and_the_thread_option(capsys, command, choices):
    text = help_text(capsys, *command)
    assert all(choice in text for choice in choices)
    assert "--threads" in text and "spin against each other" in text


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (("demo", "--image", "nothing"), "image must be one of cat, coffee"),
        (("speed", "--methods", "Saliency"), "invalid choice: 'Saliency'"),
        (("benchmark", "--methods", "NeuroMask"), "got 'NeuroMask'"),
        (("benchmark", "--methods", "Saliency[n_iter=3]"), "one of this package's methods"),
        (("benchmark", "--methods", "NeuroMaskAttr[sparse]"), "expected NAME=VALUE"),
        (("benchmark", "--suite", "imagenet"), "invalid choice: 'imagenet'"),
        (("benchmark", "--n", "0"), "expected a positive int, got '0'"),
        (("benchmark", "--objects", "coffee", "dog"), "invalid choice: 'dog'"),
        (("speed", "--threads", "none"), "expected a positive int, got 'none'"),
        (("class-masking", "--set", "epochs"), "expected NAME=VALUE"),
        (
            ("benchmark", "--methods", "Saliency", "--n", "1", "--set", "n_iter=3"),
            "not arguments of any selected method",
        ),
    ],
    ids=str,
)
def test_a_users_mistake_is_a_one_line_error(capsys, arguments, expected):
    line = error_text(capsys, *arguments)
    assert expected in line and line.startswith("python -m captum_masks")


def test_threads_sets_torchs_thread_count(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    with pytest.raises(SystemExit):  # the run itself fails on a bad --set, after the threads
        main(["benchmark", "--threads", "1", "--methods", "Saliency", "--set", "n_iter=3"])
    assert calls == [1]
