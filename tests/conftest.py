import os
import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest
import torch
from hypothesis import event, settings
from torch import nn

settings.register_profile("captum_masks", deadline=None, max_examples=15, derandomize=True)
settings.load_profile("captum_masks")


#: the test files that take longest, slowest first (``--durations=0``, summed per file)
LONGEST_FILES = (
    "test_tutorials.py",
    "test_cli.py",
    "test_dataset_explanation.py",
    "test_amortized.py",
    "test_comparison.py",
    "test_synthetic.py",
    "test_real_model.py",
    "test_contract.py",
)


def pytest_configure(config):
    """Under pytest-xdist (``-n auto``: one worker per core) each worker, and the notebook
    kernels and command-line runs it starts, computes on one thread: two workers with two
    threads each on two cores spin against each other.

    ``--dist loadfile`` hands whole files to the workers in the order the tests are collected;
    pytest-xdist would reorder them by their number of tests, which leaves the notebooks (seven
    long tests) for last, on one worker while the other waits. Keeping the collection order,
    which puts the longest files first, lets both workers finish together."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """The files of :data:`LONGEST_FILES` first, in that order; the rest as collected."""
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session", autouse=True)
def reference_model_cache(tmp_path_factory):
    """Train the synthetic suite's reference CNNs once per run, in a fresh directory, unless
    ``CAPTUM_MASKS_CACHE`` points at an existing cache (notebooks inherit the choice)."""
    if os.environ.get("CAPTUM_MASKS_CACHE"):
        yield
        return
    os.environ["CAPTUM_MASKS_CACHE"] = str(tmp_path_factory.mktemp("captum_masks_cache"))
    yield
    del os.environ["CAPTUM_MASKS_CACHE"]


class TinyCNN(nn.Module):
    """A small image classifier: (N, C, H, W) -> (N, num_classes) logits."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x, scale=None):
        pooled = self.features(x).mean(dim=(2, 3))
        logits = self.head(self.dropout(pooled))
        return logits if scale is None else logits * scale


class TwoInputs(nn.Module):
    """An RGB and a grey image in, one score vector out: a model of a tuple of inputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = TinyCNN(), TinyCNN(in_channels=1)

    def forward(self, rgb, gray):
        return self.a(rgb) + self.b(gray)


def explicit_targets(target, model: nn.Module, images: torch.Tensor) -> list:
    """Any Captum ``target`` form for ``images`` as one int per example."""
    if target is None:
        return model(images).argmax(1).tolist()
    if isinstance(target, torch.Tensor) and target.dim() == 0:
        return [int(target)] * images.shape[0]
    if isinstance(target, int):
        return [target] * images.shape[0]
    return [int(t) for t in target]


def assert_captum_metrics_run(model, explainer, images, settings: dict) -> None:
    """Captum's ``infidelity`` and ``sensitivity_max`` accept ``explainer``'s attributions of
    ``images`` for target 1 (computed with ``settings``) and give one finite value per image."""
    from captum.metrics import infidelity, sensitivity_max

    attribution = explainer.attribute(images, target=1, **settings)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.1
        return noise, inputs - noise

    score = infidelity(model, perturb, images, attribution, target=1, n_perturb_samples=2)
    assert score.shape == (images.shape[0],) and torch.isfinite(score).all()
    sensitivity = sensitivity_max(
        explainer.attribute, images, target=1, n_perturb_samples=2, **settings
    )
    assert sensitivity.shape == (images.shape[0],) and torch.isfinite(sensitivity).all()


def assert_feeds_captum_visualization(attribution: torch.Tensor, images: torch.Tensor) -> None:
    """Captum's ``visualize_image_attr`` draws the first attribution over its image."""
    from captum.attr import visualization as viz

    from captum_masks import attribution_to_image, image_to_numpy

    figure, _ = viz.visualize_image_attr(
        attribution_to_image(attribution),
        image_to_numpy(images[:1], [0.5] * 3, [0.2] * 3),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert figure is not None


class SpotDetector(nn.Module):
    """Class 1's logit is the mean brightness of a fixed square, class 0's its negation.

    Its evidence lives exactly in the square, so a correct attribution must point there.
    """

    def __init__(self, top: int, left: int, side: int):
        super().__init__()
        self.region = (slice(top, top + side), slice(left, left + side))

    def forward(self, x):
        spot = x[:, :, self.region[0], self.region[1]].mean(dim=(1, 2, 3))
        return torch.stack([-spot, spot], dim=1) * 2.0


class NormCNN(nn.Module):
    """Convolution, batch norm, dropout: a model whose training mode changes its buffers on every
    forward pass and draws from the global RNG. Any rank: (N, C, L) is treated as (N, C, L, 1),
    and channels are averaged first, so every shape from one pixel up runs."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(6, num_classes)

    def forward(self, x):
        x = x.unsqueeze(-1) if x.dim() == 3 else x
        features = self.relu(self.norm(self.conv(x.mean(dim=1, keepdim=True))))
        return self.head(self.dropout(features.mean(dim=(2, 3))))


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def images():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(3, 3, 32, 32, generator=generator)


def model_state(model: nn.Module):
    """Everything about a model that an attribution must leave as it found it."""
    return {  # the state dict holds the buffers too (batch norm statistics)
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "grads": {
            k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()
        },
        "training": [m.training for m in model.modules()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def assert_same_state(before, after):
    assert before["requires_grad"] == after["requires_grad"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert before["state_dict"].keys() == after["state_dict"].keys()
    for key, value in before["state_dict"].items():
        assert torch.equal(value, after["state_dict"][key]), key
    for key, grad in before["grads"].items():
        other = after["grads"][key]
        assert (grad is None) == (other is None), key
        if grad is not None:
            assert torch.equal(grad, other), key


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m captum_masks ARGS`` in a fresh interpreter."""
    command = [sys.executable, "-m", "captum_masks", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def fail_on_call(n: int) -> Callable:
    """A forward hook that raises ``RuntimeError("boom")`` on the n-th forward pass."""
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("boom")

    return hook


def assert_valid_mask_or_clear_error(call: Callable, like: torch.Tensor) -> None:
    """``call()`` returns a finite mask in [0, 1] with ``like``'s shape and dtype, or raises
    ``ValueError``/``TypeError`` with a message; any other exception fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attribution = call()
    except (ValueError, TypeError) as error:
        assert str(error)
        event(f"{type(error).__name__}: {str(error)[:40]}")
    else:
        event("a valid mask")
        assert attribution.shape == like.shape and attribution.dtype == like.dtype
        assert torch.isfinite(attribution).all()
        assert attribution.min() >= 0 and attribution.max() <= 1
