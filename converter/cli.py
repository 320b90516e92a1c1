"""``edge-convert``: command-line front end of :func:`converter.api.convert`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from converter.data import NORMALIZATIONS
from converter.quantize import IO_DTYPES, MODES
from edge import cli
from edge.errors import run_command

EPILOG = """examples:
  edge-convert model.h5                              float16 .tflite that every runtime loads
  edge-convert model.h5 --data digits.npz            full int8 (calibrated), accuracy measured
  edge-convert model.h5 --data d.npz --prune 0.5 --qat    pruned + QAT int8, sparsity kept
  edge-convert model.h5 --data d.npz --max-accuracy-drop 0.5   smallest model within 0.5 pp
  edge-convert model.h5 --data d.npz --edgetpu       int8 for a Coral (+ edgetpu_compiler if installed)

exit codes: 0 ok, 2 bad input (message says what to do), 1 internal error"""


def parser() -> argparse.ArgumentParser:
    p = cli.parser(
        "edge-convert",
        "Keras model (.h5, .keras, SavedModel folder) -> .tflite (pruned, QAT, int8) with a measured report.",
        epilog=EPILOG,
    )
    p.add_argument("model", help=".h5, .keras or SavedModel folder")
    p.add_argument(
        "-o",
        "--output",
        help="output .tflite (default: next to the model); the report goes to OUT.report.json",
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data", help=".npz with x (and y labels), .npy, or an image folder with one sub-folder per class"
    )
    g.add_argument(
        "--eval-data", help="separate evaluation data (same formats); default: hold out --eval-split"
    )
    g.add_argument("--eval-split", type=float, default=0.2, help="fraction of --data held out for evaluation")
    g.add_argument("--calibration-samples", type=int, default=200, help="samples for int8 calibration")
    g.add_argument(
        "--normalize",
        choices=sorted(NORMALIZATIONS),
        default=None,
        help="pixel range the model was trained on: read image folders with it and write it into the model "
        "for the device (default for image folders: 0-1; .npz data is taken as it is)",
    )
    g.add_argument(
        "--labels",
        help="class names, one a line (line N = class N), written into the model; default: the image folder's "
        "sub-folder names",
    )
    s = p.add_argument_group("steps")
    s.add_argument(
        "--prune", type=float, metavar="SPARSITY", help="magnitude pruning to this sparsity, e.g. 0.5"
    )
    s.add_argument("--prune-skip", action="append", default=[], metavar="LAYER", help="leave LAYER dense")
    s.add_argument(
        "--qat", action="store_true", help="quantization-aware training (sparsity-preserving with --prune)"
    )
    s.add_argument(
        "--qat-skip", action="append", default=[], metavar="LAYER", help="keep LAYER in float during QAT"
    )
    s.add_argument(
        "--quantize",
        choices=MODES,
        help="int8 (default with --data), int16x8, float16 (default without "
        "data), dynamic (does not load in tflite-runtime 2.14), none (float32)",
    )
    s.add_argument("--io-dtype", choices=IO_DTYPES, default="int8", help="int8 model input/output type")
    s.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="PP",
        help="try candidates, keep the smallest whose accuracy drop (percentage points) stays within PP",
    )
    s.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs for --prune/--qat")
    s.add_argument("--batch-size", type=int, default=32, help="fine-tuning batch size")
    s.add_argument("--learning-rate", type=float, default=5e-4, help="fine-tuning learning rate")
    c = p.add_argument_group("targets")
    c.add_argument(
        "--edgetpu",
        action="store_true",
        help="enforce Edge TPU needs, report op mapping, run edgetpu_compiler when on PATH",
    )
    c.add_argument(
        "--tflite-runtime-python",
        help="python with tflite-runtime 2.14 to really load the model "
        "(default: $EDGE_TFLITE_RUNTIME_PYTHON)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print the report JSON instead of the table")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return run_command("edge-convert", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from converter.api import convert

    rep = convert(
        args.model,
        output=args.output,
        data=args.data,
        eval_data=args.eval_data,
        eval_split=args.eval_split,
        calibration_samples=args.calibration_samples,
        prune=args.prune,
        prune_skip=args.prune_skip,
        qat=args.qat,
        qat_skip=args.qat_skip,
        quantize_mode=args.quantize,
        io_dtype=args.io_dtype,
        max_accuracy_drop=args.max_accuracy_drop,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        normalize=args.normalize,
        labels=args.labels,
        edgetpu=args.edgetpu,
        tflite_runtime_python=args.tflite_runtime_python,
        quiet=args.quiet or args.json,
    )
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        from converter.report import table

        print(table(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
