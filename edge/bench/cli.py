"""``edge-bench MODEL [MODEL ...]``: benchmark models on this device, print a table or JSON.

Exit codes: 0 done, 1 a model regressed against ``--reference``, 2 bad
input (missing model, bad option, unreachable broker, ...).
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge import cli
from edge.bench import compare as comparing
from edge.bench import report as reporting
from edge.bench import system
from edge.bench.core import BenchOptions, ModelBench
from edge.bench.inputs import feeds_for
from edge.bench.runner import run
from edge.errors import InputError, run_command
from edge.inference.preprocess import Normalization
from edge.model import metadata as model_metadata
from edge.model.runtime import DELEGATE_CHOICES, load_model

EXIT_REGRESSION = 1
EXIT_USAGE = 2


def _int_at_least(low: int, name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be an integer >= {low}; received {text!r}"
            ) from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {low}; received {value}")
        return value

    return parse


def _seconds(name: str, positive: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} must be a number of seconds; received {text!r}"
            ) from None
        if value < 0 or (positive and value == 0) or value != value:
            raise argparse.ArgumentTypeError(
                f"{name} must be {'> 0' if positive else '>= 0'}; received {text}"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    d = BenchOptions()
    p = cli.parser(
        "edge-bench",
        "Benchmark .tflite models on this device with the methodology of TFLite's benchmark_model\n"
        "(first inference, warm-up, timed runs each measured alone). Several models are\n"
        "interleaved and compared with the first.",
        epilog="exit codes: 0 ok, 1 regression against --reference, 2 bad input",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help=".tflite files; the first is the baseline")
    p.add_argument(
        "--runs",
        type=_int_at_least(1, "--runs"),
        default=d.runs,
        help="minimum timed invokes per model",
    )
    p.add_argument(
        "--warmup",
        type=_int_at_least(0, "--warmup"),
        default=d.warmup,
        help="minimum warm-up invokes",
    )
    p.add_argument(
        "--min-secs",
        type=_seconds("--min-secs"),
        default=d.min_secs,
        help="time each model for at least this long",
    )
    p.add_argument(
        "--max-secs",
        type=_seconds("--max-secs", positive=True),
        default=d.max_secs,
        help="stop timing a model after this long, even below --runs",
    )
    p.add_argument(
        "--warmup-min-secs",
        type=_seconds("--warmup-min-secs"),
        default=d.warmup_min_secs,
        help="warm up for at least this long",
    )
    p.add_argument(
        "--block",
        type=_int_at_least(1, "--block"),
        default=d.block,
        help="invokes per turn when interleaving models",
    )
    p.add_argument("--seed", type=_int_at_least(0, "--seed"), default=d.seed, help="seed of random inputs")
    p.add_argument(
        "--threads",
        type=_int_at_least(1, "--threads"),
        default=None,
        help="interpreter threads (default: the runtime's)",
    )
    p.add_argument(
        "--delegate",
        choices=DELEGATE_CHOICES,
        default="auto",
        help="auto: Edge TPU when the model needs it and one is present, else the CPU twin",
    )
    p.add_argument("--runtime", default="auto", help="auto, ai_edge_litert, tflite_runtime or tensorflow")
    p.add_argument(
        "--input",
        default="random",
        metavar="random|IMAGE|DIR",
        help="seeded random tensors, or images preprocessed exactly as the agent does",
    )
    p.add_argument(
        "--input-mean", type=float, default=None, help="normalization mean (as the agent's config)"
    )
    p.add_argument("--input-std", type=float, default=None, help="normalization std (as the agent's config)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--samples", action="store_true", help="include every timed latency in the JSON")
    p.add_argument("--output", type=Path, help="also write the JSON report to this file")
    p.add_argument("--note", help="free text stored in the report (e.g. when recording a reference)")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="FILE",
        help="write latency histograms and a comparison chart "
        "(PNG/SVG/PDF; needs matplotlib: pip install 'edge-ml-toolkit[plot]')",
    )
    p.add_argument(
        "--publish",
        metavar="URL",
        help="send the report to <prefix>/<device>/bench on this broker, e.g. mqtt://localhost:1883",
    )
    p.add_argument("--device-id", default=None, help="device id in the topic and report (default: hostname)")
    p.add_argument("--prefix", default="edge", help="topic prefix")
    p.add_argument(
        "--reference",
        type=Path,
        metavar="FILE",
        help="compare p50 with this reference report; exit 1 on a regression",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.3,
        help="allowed slow-down against --reference (0.3 = 30 %%)",
    )
    return p


def _options(args: argparse.Namespace) -> BenchOptions:
    try:
        return BenchOptions(
            runs=args.runs,
            warmup=args.warmup,
            min_secs=args.min_secs,
            max_secs=args.max_secs,
            warmup_min_secs=args.warmup_min_secs,
            block=args.block,
            seed=args.seed,
        )
    except ValueError as exc:
        raise InputError(f"bad options: {exc}", "see edge-bench --help") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 with a message on bad flags
    return run_command("edge-bench", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    from edge.bench import publish as publishing

    options = _options(args)
    device = publishing.check_device_id(args.device_id or socket.gethostname().split(".")[0])
    # Fail before minutes of benchmarking, not after.
    if args.publish:
        publishing.parse_url(args.publish)
    if args.plot:
        from edge.bench.plot import _pyplot

        _pyplot()
    reference = comparing.load_reference(args.reference) if args.reference else None
    if args.tolerance < 0:
        raise InputError(
            f"--tolerance must be >= 0; received {args.tolerance}", "e.g. --tolerance 0.3 for 30 %"
        )
    benches = []
    for path in args.models:
        rss_before = system.rss_mb()
        loaded = load_model(path, runtime=args.runtime, threads=args.threads, delegate=args.delegate)
        # Without --input-mean/--input-std, the normalization edge-convert embedded in the model.
        meta = model_metadata.resolve(loaded.path, mean=args.input_mean, std=args.input_std)
        norm = Normalization(mean=meta.mean, std=meta.std)
        feeds, label = feeds_for(loaded, args.input, options.seed, norm)
        bench = ModelBench(loaded, feeds, label, rss_before_mb=rss_before)
        bench.first_inference()  # now, so rss_delta_mb is this model's own growth
        benches.append(bench)
    result = run(benches, options)
    report = result.report(device=device, samples=args.samples)
    if args.note:
        report["note"] = args.note

    print(reporting.to_json(report) if args.json else reporting.table(report))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(reporting.to_json(report) + "\n")
    if args.plot:
        from edge.bench.plot import plot

        plot(result.results, args.plot, title=f"edge-bench on {report['board'] or report['arch']}")
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.publish:
        topic = publishing.publish(report, args.publish, device, prefix=args.prefix)
        print(f"report published to {topic}", file=sys.stderr)
    if reference is not None:
        comparisons = comparing.compare(report, reference, args.tolerance)
        print(comparing.summary(comparisons, args.tolerance, reference, report), file=sys.stderr)
        if any(c.regressed for c in comparisons):
            return EXIT_REGRESSION
    return 0


if __name__ == "__main__":
    sys.exit(main())
