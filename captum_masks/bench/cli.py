"""Command line: ``python -m captum_masks {demo,speed,benchmark,class-masking,tabular,kinds,
explain,scaling,explainer-epochs} ...``."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Iterable
from typing import Any

import torch

from captum_masks.bench.cli_types import image, positive_int, setting, target
from captum_masks.bench.layouts import SPLITS
from captum_masks.bench.objects import NAMED_OBJECTS, PAIR_CALIBRATION_OBJECTS
from captum_masks.bench.runners import ALL_METHODS, split_variant
from captum_masks.bench.speed import SPEED_METHODS
from captum_masks.bench.suites import SUITES
from captum_masks.bench.tables import add_table_argument, print_table
from captum_masks.bench.zoo import SAMPLE_IMAGES

THREADS_HELP = (
    "torch's CPU threads for this run (default: torch's own choice, one per core). Use fewer "
    "when other work shares the cores: threads that outnumber the free cores spin against each "
    "other (the docs' speed page)"
)
#: each subcommand and what it does (its --help line)
COMMANDS = {
    "demo": "explain a cat and a cup in one photo with this package's methods and Captum's",
    "speed": "per-iteration cost vs. bare forward+backward",
    "benchmark": "compare the methods with Captum's built-ins on ground-truth images",
    "class-masking": "Stalder et al.'s class-specific masking table for the trained "
    "AmortizedExplainer",
    "tabular": "breast-cancer rows: each method's feature ranking against ShapleyValueSampling",
    "kinds": "rows, sequences, volumes, token ids and 32-px images whose evidence is known: "
    "each method at its defaults next to Captum's",
    "explain": "explain a whole dataset into a folder, resumable, on one process or torchrun",
    "scaling": "images per second of explain on 1 and 2 processes, and ImageNet-val's cost",
    "explainer-epochs": "how fast the AmortizedExplainer learns: each epoch's masks scored next "
    "to IntegratedGradients",
}


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, set the threads and run the subcommand; exit code 0, or 2 with a
    one-line error for a user's mistake."""
    parser = argparse.ArgumentParser(prog="python -m captum_masks", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=positive_int, default=None, help=THREADS_HELP)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_demo,
        _add_speed,
        _add_benchmark,
        _add_class_masking,
        _add_tabular,
        _add_kinds,
        _add_explain,
        _add_scaling,
        _add_explainer_epochs,
    ):
        add(commands, common)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        _run(args, argv)
    except ValueError as error:  # a user's mistake the command could only see while running
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    return 0


def _add_demo(commands: Any, common: argparse.ArgumentParser) -> None:
    demo = commands.add_parser("demo", parents=[common], help=COMMANDS["demo"])
    demo.add_argument(
        "--image",
        default=None,
        type=image,
        help=f"explain this photo's top class instead: a sample image ({', '.join(SAMPLE_IMAGES)})"
        " or an image file's path",
    )
    demo.add_argument("--out", default="demo.png", help="where to save the figure")
    demo.add_argument(
        "--n-iter",
        type=positive_int,
        default=None,
        help="MeaningfulPerturbation and NeuroMask iterations (default: each method's own)",
    )
    demo.add_argument("--seed", type=int, default=0)


def _add_speed(commands: Any, common: argparse.ArgumentParser) -> None:
    speed = commands.add_parser("speed", parents=[common], help=COMMANDS["speed"])
    add_table_argument(speed)
    _add_methods(speed, SPEED_METHODS, f"methods to time, of {', '.join(SPEED_METHODS)}", "all")
    speed.add_argument("--batch-size", type=positive_int, default=1)
    speed.add_argument("--repeats", type=positive_int, default=3)
    speed.add_argument(
        "--run-lengths",
        nargs=2,
        type=positive_int,
        default=(10, 60),
        metavar=("SHORT", "LONG"),
        help="iterations of the two runs whose difference gives the time of one iteration",
    )
    speed.add_argument(
        "--images",
        type=positive_int,
        default=4,
        help="held-out photos the whole runs (s / image, iterations run) explain",
    )
    _add_settings(
        speed,
        "other arguments for the run at default settings (s / image, iterations run), e.g. "
        "--set optimization.tolerance=1e-3",
    )
    speed.add_argument(
        "--before",
        nargs="+",
        default=None,
        metavar="NAME=VALUE",
        type=setting,
        help="also time a whole run with these arguments, e.g. the previous defaults "
        "--before optimization.tolerance=None, and print its iterations run and s / image "
        "alongside",
    )


def _add_benchmark(commands: Any, common: argparse.ArgumentParser) -> None:
    bench = commands.add_parser("benchmark", parents=[common], help=COMMANDS["benchmark"])
    add_table_argument(bench)
    bench.add_argument("--suite", choices=SUITES, default="synthetic")
    _add_methods(
        bench,
        ALL_METHODS,
        f"methods to run, of {', '.join(ALL_METHODS)}; TorchRay's only when named, after "
        "pip install --no-deps torchray==1.0.0.2; one of this package's with its own settings "
        "is a row of its own, e.g. 'NeuroMaskAttr[mask.temperature=1.0 optimization.n_iter=300]'",
        "all the suite has",
        variants=True,
    )
    bench.add_argument(
        "--n",
        "--n-images",
        dest="n",
        type=positive_int,
        default=20,
        help="number of images (under torchrun write --n-images: torchrun takes --n for one of "
        "its own options)",
    )
    bench.add_argument(
        "--workdir",
        default=None,
        help="explain through captum_masks.explain_dataset into this folder: resumable, and "
        "needed under torchrun, where the processes share each method's rows",
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument(
        "--split",
        choices=SPLITS,
        default="held-out",
        help="held-out (reported) or calibration (where settings are chosen) images",
    )
    bench.add_argument(
        "--objects",
        nargs=2,
        choices=sorted(NAMED_OBJECTS),
        default=None,
        metavar="OBJECT",
        help="photos-pairs only: the two objects of every image, of "
        f"{', '.join(sorted(NAMED_OBJECTS))} (e.g. --objects coffee officer, to look at one hard "
        f"pair); drawn per image by default, never from {', '.join(PAIR_CALIBRATION_OBJECTS)}, "
        "which only calibrate",
    )
    bench.add_argument("--out", default=None, help="figure path (default: benchmark_SUITE.png)")
    bench.add_argument(
        "--rows",
        action="store_true",
        help="also print every row's pointing, relevance mass and discrimination per method",
    )
    _add_settings(
        bench,
        "override an argument of this package's methods, e.g. --set mask.temperature=1.0 "
        "optimization.n_iter=150 'perturbation=Blur(sigma=5.0)'",
    )


def _add_class_masking(commands: Any, common: argparse.ArgumentParser) -> None:
    masking = commands.add_parser(
        "class-masking", parents=[common], help=COMMANDS["class-masking"]
    )
    add_table_argument(masking)
    masking.add_argument("--n", type=positive_int, default=200, help="number of test images")
    masking.add_argument("--seed", type=int, default=0)
    masking.add_argument("--retrain", action="store_true", help="train the explainer again")
    _add_settings(masking, "train with other settings, e.g. --set separate_classes=False epochs=8")


def _add_explainer_epochs(commands: Any, common: argparse.ArgumentParser) -> None:
    from captum_masks.bench.explainer_epochs import EPOCH_SUITES

    epochs = commands.add_parser(
        "explainer-epochs", parents=[common], help=COMMANDS["explainer-epochs"]
    )
    add_table_argument(epochs)
    epochs.add_argument("--suite", choices=sorted(EPOCH_SUITES), default="synthetic-pairs")
    epochs.add_argument("--epochs", type=positive_int, default=5)
    epochs.add_argument("--n", type=positive_int, default=100, help="images scored")
    epochs.add_argument("--split", choices=SPLITS, default="held-out")
    epochs.add_argument("--train-size", type=positive_int, default=2000)
    _add_settings(
        epochs, "the explainer's or fit's arguments, e.g. --set feature_layer=None lr=1e-3"
    )


def _add_tabular(commands: Any, common: argparse.ArgumentParser) -> None:
    tabular = commands.add_parser("tabular", parents=[common], help=COMMANDS["tabular"])
    add_table_argument(tabular)
    tabular.add_argument("--split", choices=SPLITS, default="held-out")
    tabular.add_argument(
        "--n", type=positive_int, default=None, help="explain the first n rows (default: all)"
    )
    tabular.add_argument("--seed", type=int, default=0, help="training and split seed")


def _add_kinds(commands: Any, common: argparse.ArgumentParser) -> None:
    from captum_masks.bench.kind_tasks import ALL_KINDS, KINDS, TRANSFORMER_KINDS

    kinds = commands.add_parser("kinds", parents=[common], help=COMMANDS["kinds"])
    add_table_argument(kinds)
    kinds.add_argument("--split", choices=SPLITS, default="held-out")
    kinds.add_argument("--n", type=positive_int, default=40, help="inputs explained per kind")
    kinds.add_argument(
        "--kinds",
        nargs="+",
        choices=ALL_KINDS,
        default=list(KINDS),
        metavar="KIND",
        help=f"of {', '.join(ALL_KINDS)} (default: {', '.join(KINDS)}; "
        f"{' and '.join(TRANSFORMER_KINDS)} need the transformers extra)",
    )
    _add_settings(
        kinds,
        "an argument of this package's methods, given to each that takes it, e.g. "
        "--set l1_weight=0.4 (to calibrate; the table then reports those settings)",
    )


def _add_methods(
    parser: argparse.ArgumentParser,
    choices: Iterable[str],
    help_text: str,
    default_text: str,
    variants: bool = False,
) -> None:
    """``--methods``; with ``variants``, a method may carry its own settings as a row of its own
    (``'NeuroMaskAttr[mask.temperature=1.0]'``)."""
    parser.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=None if variants else list(choices),
        type=benchmark_row if variants else str,
        metavar="METHOD",
        help=f"{help_text} (default: {default_text})",
    )


def benchmark_row(text: str) -> str:
    """A ``--methods`` entry of the benchmark: a method, or one of this package's with its own
    settings (:func:`~captum_masks.bench.runners.split_variant`)."""
    try:
        method, _ = split_variant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if method not in ALL_METHODS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(ALL_METHODS)}, got {method!r}"
        )
    return text


def _add_settings(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--set", nargs="+", default=[], metavar="NAME=VALUE", type=setting, help=help_text
    )


def _add_explain(commands: Any, common: argparse.ArgumentParser) -> None:
    explain = commands.add_parser(
        "explain",
        parents=[common],
        help=COMMANDS["explain"],
        description="Explain every example of a dataset with one method and write the results "
        "to --out, one file per batch (captum_masks.explain_dataset). Run it again on the same "
        "--out to finish an interrupted run; under torchrun (e.g. torchrun --nproc_per_node=2 "
        "-m captum_masks explain ...) the processes share the batches.",
    )
    explain.add_argument(
        "method",
        help="MeaningfulPerturbation, NeuroMaskAttr, ExtremalPerturbation, RISE, "
        "GuidedFeatureInversion (with --layer), LayerMeaningfulPerturbation, LayerNeuroMask, "
        "or any captum.attr attribution "
        "(e.g. Occlusion, IntegratedGradients, LayerGradCam with --layer)",
    )
    explain.add_argument(
        "--data",
        required=True,
        help="a folder of images (preprocessed for the zoo's ImageNet models), or "
        "module:function returning a map-style dataset",
    )
    explain.add_argument("--out", required=True, help="the results' folder")
    explain.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="efficientnet_lite0 (the zoo's, pretrained) or module:function returning a model",
    )
    explain.add_argument("--layer", default=None, help="a layer method's layer, by its name")
    explain.add_argument("--batch-size", type=positive_int, default=8)
    explain.add_argument(
        "--target",
        type=target,
        default="predicted",
        help="predicted (the top class), label (the dataset's), a class index, or none",
    )
    explain.add_argument(
        "--precision",
        choices=("float32", "float16", "bfloat16"),
        default=None,
        help="the stored attributions' dtype (default: the method's)",
    )
    explain.add_argument(
        "--low-resolution",
        action="store_true",
        help="store each mask as the low-resolution grid the method optimised "
        "(MeaningfulPerturbation, ExtremalPerturbation, GuidedFeatureInversion)",
    )
    explain.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    explain.add_argument(
        "--first", type=positive_int, default=None, help="explain only the first N examples"
    )
    explain.add_argument(
        "--pointing-sigma",
        type=float,
        default=0.0,
        help="smoothing (px) of the map before the pointing game, where the data has masks; "
        "the docs' photo tables use 4",
    )
    _add_settings(explain, "the method's attribute arguments, e.g. --set optimization.n_iter=150")


def _add_scaling(commands: Any, common: argparse.ArgumentParser) -> None:
    from captum_masks.bench.scaling import SCALING_METHODS

    scaling = commands.add_parser("scaling", parents=[common], help=COMMANDS["scaling"])
    add_table_argument(scaling)
    scaling.add_argument(
        "--methods",
        nargs="+",
        default=list(SCALING_METHODS),
        metavar="METHOD",
        help=f"methods that explain takes (default: {', '.join(SCALING_METHODS)})",
    )
    scaling.add_argument("--images", type=positive_int, default=6, help="held-out photos")
    scaling.add_argument(
        "--batch-size", type=positive_int, default=2, help="examples per batch, every count"
    )
    scaling.add_argument(
        "--processes", type=positive_int, nargs="+", default=[1, 2], help="process counts"
    )


def _run(args: argparse.Namespace, argv: list[str] | None) -> None:
    command = "python -m captum_masks " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.command == "demo":
        from captum_masks.bench.demo import run_demo

        run_demo(image=args.image, out=args.out, n_iter=args.n_iter, seed=args.seed)
    elif args.command == "benchmark":
        from captum_masks.bench.benchmark import (
            format_rows,
            format_table,
            run_benchmark,
            save_figure,
        )
        from captum_masks.bench.explain import process_group_from_environment

        with process_group_from_environment() as rank:
            result = run_benchmark(
                args.suite,
                args.methods,
                args.n,
                args.seed,
                args.split,
                overrides=dict(args.set),
                workdir=args.workdir,
                objects=args.objects,
            )
        if rank != 0:
            return
        print(f"\n{args.suite} suite, {args.split} split, {args.n} images ({command}):\n")
        print_table(args, command, format_table(result))
        if args.rows:
            print(f"\nEvery row:\n\n{format_rows(result)}")
        out = args.out or f"benchmark_{args.suite}.png"
        save_figure(result, out)
        print(f"\nSaved {out}")
    elif args.command == "explain":
        from captum_masks.bench.explain import (
            process_group_from_environment,
            run_explain,
        )

        with process_group_from_environment():
            report = run_explain(
                args.method,
                args.data,
                args.out,
                model=args.model,
                layer=args.layer,
                settings=dict(args.set),
                target=args.target,
                batch_size=args.batch_size,
                precision=args.precision,
                low_resolution=args.low_resolution,
                num_workers=args.num_workers,
                pointing_sigma=args.pointing_sigma,
                first=args.first,
            )
        if report:
            print(report)
    elif args.command == "scaling":
        from captum_masks.bench.scaling import format_scaling, measure_scaling

        rows = measure_scaling(
            args.methods, args.processes, args.images, batch_size=args.batch_size
        )
        print_table(args, command, format_scaling(rows))
    elif args.command == "tabular":
        from captum_masks.bench.tabular import format_tabular, tabular_report

        print_table(args, command, format_tabular(tabular_report(args.split, args.n, args.seed)))
    elif args.command == "kinds":
        from captum_masks.bench.kinds import format_kinds, kinds_report

        print_table(
            args,
            command,
            format_kinds(kinds_report(tuple(args.kinds), args.n, args.split, dict(args.set))),
        )
    elif args.command == "explainer-epochs":
        from captum_masks.bench.explainer_epochs import (
            explainer_epochs_report,
            format_explainer_epochs,
        )

        epoch_rows = explainer_epochs_report(
            args.suite, args.epochs, args.n, args.split, args.train_size, overrides=dict(args.set)
        )
        print_table(args, command, format_explainer_epochs(epoch_rows))
    elif args.command == "class-masking":
        from captum_masks.bench.class_masking import (
            class_masking_report,
            format_class_masking,
        )

        masking = class_masking_report(args.n, args.seed, args.retrain, dict(args.set))
        print_table(args, command, format_class_masking(masking))
    else:
        from captum_masks.bench.speed import SPEED_METHODS, format_speed, measure_speed

        results = [
            measure_speed(
                method,
                batch_size=args.batch_size,
                repeats=args.repeats,
                short_iters=args.run_lengths[0],
                long_iters=args.run_lengths[1],
                settings=dict(args.set),
                before=None if args.before is None else dict(args.before),
                images=args.images,
            )
            for method in args.methods or SPEED_METHODS
        ]
        print_table(args, command, format_speed(results))
