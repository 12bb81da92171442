"""Command line: ``python -m captum_masks {demo,speed,benchmark,class-masking} ...``."""

from __future__ import annotations

import argparse
import ast
import sys

from captum_masks.comparison import SUITES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captum_masks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", help="explain a photo with MeaningfulPerturbation and Captum's built-ins"
    )
    demo.add_argument(
        "--image",
        default="cat",
        help="a sample image name (cat, coffee, "
        "astronaut, rocket, camera, china, flower, grace_hopper) or a file path",
    )
    demo.add_argument("--out", default="demo.png", help="where to save the figure")
    demo.add_argument("--n-iter", type=int, default=300, help="MeaningfulPerturbation iterations")
    demo.add_argument("--seed", type=int, default=0)

    speed = commands.add_parser("speed", help="per-iteration cost vs. bare forward+backward")
    speed.add_argument(
        "--methods", nargs="+", default=None, help="optimisation methods to time (default: all)"
    )
    speed.add_argument("--batch-size", type=int, default=1)
    speed.add_argument("--repeats", type=int, default=3)

    bench = commands.add_parser(
        "benchmark", help="compare the methods with Captum's built-ins on ground-truth images"
    )
    bench.add_argument("--suite", choices=SUITES, default="synthetic")
    bench.add_argument("--methods", nargs="+", default=None, help="subset of methods to run")
    bench.add_argument("--n", type=int, default=20, help="number of images")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", default=None, help="figure path (default: benchmark_SUITE.png)")
    bench.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        type=_setting,
        help="override an argument of this package's methods, e.g. --set temperature=1.0 n_iter=150",
    )

    masking = commands.add_parser(
        "class-masking",
        help="Stalder et al.'s class-specific masking table for the trained AmortizedExplainer",
    )
    masking.add_argument("--n", type=int, default=200, help="number of test images")
    masking.add_argument("--seed", type=int, default=0)
    masking.add_argument("--retrain", action="store_true", help="train the explainer again")
    masking.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="NAME=VALUE",
        type=_setting,
        help="train with other settings, e.g. --set separate_classes=False epochs=8",
    )

    args = parser.parse_args(argv)
    if args.command == "demo":
        from captum_masks.demo import run_demo

        run_demo(image=args.image, out=args.out, n_iter=args.n_iter, seed=args.seed)
    elif args.command == "benchmark":
        from captum_masks.comparison import format_table, run_benchmark, save_figure

        result = run_benchmark(
            args.suite, args.methods, args.n, args.seed, overrides=dict(args.set)
        )
        command = " ".join(["python -m captum_masks", *(sys.argv[1:] if argv is None else argv)])
        print(f"\n{args.suite} suite, {args.n} images ({command}):\n")
        print(format_table(result))
        out = args.out or f"benchmark_{args.suite}.png"
        save_figure(result, out)
        print(f"\nSaved {out}")
    elif args.command == "class-masking":
        from captum_masks.comparison import class_masking_report, format_class_masking

        report = class_masking_report(args.n, args.seed, args.retrain, dict(args.set))
        print(format_class_masking(report))
    else:
        from captum_masks.benchmarks import SPEED_METHODS, format_speed, measure_speed

        results = [
            measure_speed(method, batch_size=args.batch_size, repeats=args.repeats)
            for method in args.methods or SPEED_METHODS
        ]
        print(format_speed(results))
    return 0


def _setting(text: str) -> tuple[str, object]:
    name, separator, value = text.partition("=")
    if not separator or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value  # a bare word such as rmsprop


if __name__ == "__main__":
    sys.exit(main())
