"""``convert(...)``: the Python face of edge-convert (same options, returns the report dict)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import edge
from converter import compat, evaluate, isolate, quantize, report
from converter import data as data_mod
from converter import inputs as inputs_mod
from converter import metadata as metadata_mod
from converter.errors import ConvertError
from edge.contract.messages import utc_iso

# Candidates tried by --max-accuracy-drop, smallest first. Dynamic-range is left out on purpose:
# TF 2.21 writes FULLY_CONNECTED v12, which tflite-runtime 2.14 cannot load.
CANDIDATES = (
    ("int8", "int8", False),
    ("int8+qat", "int8", True),
    ("int16x8", "int16x8", False),
    ("float16", "float16", False),
    ("float32", "none", False),
)


def _default_output(src: Path) -> Path:
    if src.is_dir():
        return src.parent / (src.name.rstrip("/") + ".tflite")
    return src.with_suffix(".tflite")


def _say(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _copy(model: Any) -> Any:
    from converter import _tf

    clone = _tf.keras().models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _import_tensorflow(quiet: bool) -> list[dict[str, Any]]:
    """Time the TensorFlow import (seconds on a small board, cached after the first call)."""
    from converter import _tf

    if _tf.imported():
        return []
    _say(quiet, "importing TensorFlow")
    t0 = time.perf_counter()
    _tf.keras()
    return [{"name": "import_tensorflow", "seconds": round(time.perf_counter() - t0, 3)}]


def _classes(model: Any, float_out: Any) -> int | None:
    """Number of classes of a classifier's (N, K) output; None for other outputs or unknown."""
    if float_out is not None:
        shape = tuple(float_out.shape)
    elif getattr(model, "outputs", None):
        shape = tuple(model.outputs[0].shape)
    else:
        return None
    return int(shape[-1]) if len(shape) == 2 and shape[-1] is not None and int(shape[-1]) > 1 else None


def _failed_candidate(name: str, mode: str, qat: bool, reason: str) -> dict[str, Any]:
    return {
        "name": name,
        "mode": mode,
        "qat": qat,
        "error": reason,
        "size_bytes": None,
        "tflite_accuracy": None,
        "accuracy_drop": None,
        "top1_agreement": None,
        "within_budget": False,
        "chosen": False,
    }


def convert(
    model: str | Path | Any,
    *,
    output: str | Path | None = None,
    data: str | Path | None = None,
    eval_data: str | Path | None = None,
    eval_split: float = 0.2,
    calibration_samples: int = 200,
    prune: float | None = None,
    prune_skip: Sequence[str] = (),
    qat: bool = False,
    qat_skip: Sequence[str] = (),
    quantize_mode: str | None = None,
    io_dtype: str = "int8",
    max_accuracy_drop: float | None = None,
    epochs: int = 2,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
    normalize: str | None = None,
    labels: str | Path | None = None,
    edgetpu: bool = False,
    tflite_runtime_python: str | None = None,
    quiet: bool = True,
    write_report: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Convert a Keras model (path or tf-keras object) to .tflite; return the report (also written as JSON).

    Mirrors the CLI: ``convert("model.h5", data="digits.npz", prune=0.5, qat=True)`` ==
    ``edge-convert model.h5 --data digits.npz --prune 0.5 --qat``.
    """
    started = time.perf_counter()
    warnings: list[str] = []
    hints: list[str] = []
    progress = not quiet
    # Option checks first: they are cheap and need no TensorFlow.
    if quantize_mode is not None and quantize_mode not in quantize.MODES:
        raise ConvertError(
            f"--quantize must be one of {', '.join(quantize.MODES)}; received {quantize_mode!r}",
            "pick one of them",
        )
    if normalize is not None and normalize not in data_mod.NORMALIZATIONS:
        raise ConvertError(
            f"--normalize must be one of {', '.join(data_mod.NORMALIZATIONS)}; received {normalize!r}",
            "pick the pixel range the model was trained on",
        )
    if epochs < 1 or batch_size < 1 or calibration_samples < 1:
        raise ConvertError(
            f"--epochs, --batch-size and --calibration-samples must be >= 1; received {epochs}, "
            f"{batch_size}, {calibration_samples}",
            "pass positive numbers",
        )
    if max_accuracy_drop is not None:
        if quantize_mode is not None:
            raise ConvertError(
                "--max-accuracy-drop picks the quantization itself; --quantize was also given",
                "drop one of the two options",
            )
        if max_accuracy_drop < 0:
            raise ConvertError(
                f"--max-accuracy-drop is in percentage points and must be >= 0; received {max_accuracy_drop}",
                "e.g. --max-accuracy-drop 1.0",
            )
        if data is None:
            raise ConvertError(
                "--max-accuracy-drop measures accuracy, which needs labelled --data",
                "pass --data (.npz with x and y, or an image folder)",
            )
    if edgetpu and quantize_mode not in (None, "int8"):
        raise ConvertError(
            f"--edgetpu needs a fully int8 model; received --quantize {quantize_mode}",
            "drop --quantize (int8 is the default with --data) or drop --edgetpu",
        )
    if qat and quantize_mode not in (None, "int8"):
        raise ConvertError(
            f"--qat trains the model for int8; received --quantize {quantize_mode}",
            "drop --quantize (int8 is used with --qat) or drop --qat",
        )
    if prune is not None and not 0.0 < prune < 1.0:
        raise ConvertError(
            f"--prune must be a sparsity between 0 and 1 (e.g. 0.5); received {prune}",
            "pass the fraction of weights to zero, e.g. --prune 0.5",
        )
    if data is None and (edgetpu or quantize_mode in quantize.NEEDS_CALIBRATION):
        what = (
            "--edgetpu needs a full int8 model, which needs"
            if edgetpu
            else f"--quantize {quantize_mode} calibrates activation ranges on sample inputs, which needs"
        )
        raise ConvertError(
            f"{what} calibration data; no --data was given",
            "pass --data (an .npz/.npy or image folder of typical inputs)"
            + ("" if edgetpu else ", or use --quantize float16"),
        )
    if (prune is not None or qat) and data is None:
        raise ConvertError(
            f"{'--prune' if prune is not None else '--qat'} fine-tunes the model, which needs "
            "labelled data; no --data was given",
            "pass --data as an .npz with x and y, or an image folder with one sub-folder per class",
        )

    early_steps: list[dict[str, Any]] = []
    if isinstance(model, (str, Path)):
        src_path = Path(model)
        inputs_mod.detect_format(src_path)  # fail fast on paths before importing TensorFlow
        if data is not None and not Path(data).exists():
            raise ConvertError(
                f"data not found: {data}", f"check the path (relative paths start at {Path.cwd()})"
            )
        early_steps.extend(_import_tensorflow(quiet))
        t0 = time.perf_counter()
        _say(quiet, f"loading {src_path.name}" + (" (onnx2tf)" if src_path.suffix.lower() == ".onnx" else ""))
        source = inputs_mod.load(src_path, needs_tf_keras=prune is not None or qat)
        early_steps.append(
            {"name": "load", "seconds": round(time.perf_counter() - t0, 3), "format": source.format}
        )
        early_steps.extend(source.load_steps)
    else:
        if output is None:
            raise ConvertError("a model object was given without output=", "pass output='model.tflite'")
        source = inputs_mod.from_object(model, Path(output))
        src_path = Path(output)
    out = Path(output) if output is not None else _default_output(src_path)
    if out.suffix != ".tflite":
        raise ConvertError(f"-o must end in .tflite; received {out}", f"e.g. -o {out.with_suffix('.tflite')}")
    out.parent.mkdir(parents=True, exist_ok=True)

    splits = None
    data_block: dict[str, Any] | None = None
    if data is not None:
        nchw = source.source_layout == "NCHW"
        ds = data_mod.load(data, source.input_shape, normalize=normalize or "0-1", channels_first=nchw)
        if Path(data).is_dir() and normalize is None:
            normalize = "0-1"  # what the image folder was read with: the device must feed the same
        ev = (
            data_mod.load(eval_data, source.input_shape, normalize=normalize or "0-1", channels_first=nchw)
            if eval_data is not None
            else None
        )
        splits = data_mod.split(
            ds, eval_split=eval_split, eval_data=ev, calibration_samples=calibration_samples, seed=seed
        )
        warnings.extend(splits.warnings)
        data_block = {
            "source": ds.source,
            "samples": len(ds),
            "labels": ds.y is not None,
            "train_samples": len(splits.train),
            "eval_samples": len(splits.eval),
            "eval_source": ev.source if ev is not None else f"{eval_split:.0%} held out of --data",
            "calibration_samples": len(splits.calibration),
            "normalize": normalize,
        }

    if max_accuracy_drop is None:
        if quantize_mode is not None:
            mode, chosen_by = quantize_mode, "option"
        elif edgetpu or qat or splits is not None:
            mode, chosen_by = "int8", "default"
        else:
            mode, chosen_by = "float16", "default"
            hints.append(
                "no --data: wrote a float16 model that every runtime loads; pass --data (an .npz or image "
                "folder of typical inputs) for a 4x smaller full-int8 model"
            )
        if mode == "dynamic":
            warnings.append(
                "dynamic-range models from TF 2.21 use FULLY_CONNECTED v12, which tflite-runtime 2.14 "
                "cannot load; see compatibility.tflite_runtime"
            )
        if edgetpu and splits is None:
            raise ConvertError(
                "--edgetpu needs a full int8 model, which needs calibration data; no --data was given",
                "pass --data (an .npz/.npy or image folder of typical inputs)",
            )
    else:
        mode, chosen_by = "int8", "max_accuracy_drop"
    if splits is not None and splits.eval.y is None and (max_accuracy_drop is not None):
        raise ConvertError(
            f"--max-accuracy-drop needs labels; {splits.eval.source} has none (no y)",
            "save the data as .npz with x and y, or use an image folder",
        )

    if source.source_layout is not None and source.source_layout != source.layout:
        hints.append(
            f"the {source.format} model takes {source.source_layout}; the .tflite takes {source.layout}: on the "
            f"device feed images as (1, H, W, C) (edge-agent and edge-bench do)"
        )
    steps: list[dict[str, Any]] = early_steps
    keras_model = source.model
    # Measure the user's float model before any fine-tuning touches weights.
    float_out = source.predict(splits.eval.x) if splits is not None else None
    if prune is not None or qat or (max_accuracy_drop is not None and source.flavor == "tf_keras"):
        keras_model = _copy(keras_model)  # pruning/QAT wrap layers in place: never change the caller's model
    train = splits.train if splits is not None else None
    # The QAT support check runs before any training: a refusal must not cost the user a pruning run.
    qat_refusal: str | None = None
    prepared: Any = None
    if qat:
        from converter.steps import qat as qat_step

        _say(quiet, "checking which layers tensorflow-model-optimization can quantize")
        qat_ready, rec = qat_step.prepare(keras_model, qat_skip, preserve_sparsity=prune is not None)
        steps.append(rec)
        if prune is None:
            prepared = qat_ready  # nothing changes the weights before QAT: train the checked model
    elif max_accuracy_drop is not None and source.flavor == "tf_keras" and not edgetpu:
        from converter.steps import qat as qat_step

        try:
            steps.append(
                {
                    **qat_step.prepare(keras_model, qat_skip, preserve_sparsity=prune is not None)[1],
                    "candidate": "int8+qat",
                }
            )
        except ConvertError as exc:
            qat_refusal = f"{exc.what} ({exc.fix})"
    if prune is not None:
        from converter.steps import prune as prune_step

        _say(quiet, f"pruning to {prune:.0%} sparsity ({epochs} epochs)")
        keras_model, rec = prune_step.prune(
            keras_model,
            train,
            sparsity=prune,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            skip=prune_skip,
            progress=progress,
        )
        steps.append(rec)
    base_model = keras_model  # after pruning, before QAT
    if qat:
        from converter.steps import qat as qat_step

        _say(quiet, f"quantization-aware training ({epochs} epochs)")
        keras_model, rec = qat_step.qat(
            keras_model,
            train,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            skip=qat_skip,
            preserve_sparsity=prune is not None,
            progress=progress,
            prepared=prepared,
        )
        steps.append(rec)

    calib = splits.calibration.x if splits is not None else None
    saved_dir = source.path if source.flavor == "tf" else None
    eval_y = splits.eval.y if splits is not None else None
    candidates: list[dict[str, Any]] = []

    meta = metadata_mod.collect(
        labels_file=labels,
        data_class_names=splits.train.class_names if splits is not None else (),
        model=source.model,
        classes=_classes(keras_model, float_out),
        normalize=normalize,
        layout=source.layout,
    )
    meta_entries = metadata_mod.entries(meta)

    # id(model) -> the SavedModel the child converter reads, written once per model; the directories go
    # when convert() returns.
    exports: dict[int, tempfile.TemporaryDirectory[str]] = {}

    def build(m: Any, q_mode: str, dest: Path, label: str, isolated: bool = False) -> dict[str, Any]:
        """Convert ``m`` to ``dest``; ``isolated``: in a child Python (see converter.isolate)."""
        flavor, sm_dir, exported = source.flavor, saved_dir, 0.0
        if isolated:
            if flavor != "tf":  # a SavedModel input is read as it is
                if id(m) not in exports:
                    t0 = time.perf_counter()
                    exports[id(m)] = tempfile.TemporaryDirectory(prefix="edge-convert-saved-")
                    quantize.export_saved_model(
                        m, flavor=flavor, batch1=edgetpu, dest=Path(exports[id(m)].name) / "saved"
                    )
                    exported = time.perf_counter() - t0
                sm_dir = Path(exports[id(m)].name) / "saved"
            flavor, m = "tf", None
        tfl, rec = quantize.convert(
            m,
            flavor=flavor,
            mode=q_mode,
            io_dtype=io_dtype,
            calibration=calib,
            saved_model_dir=sm_dir,
            progress=progress,
            label=label,
            batch1=edgetpu,
            metadata=meta_entries,
            isolate=isolated,
        )
        if exported:
            rec["seconds"] = round(rec["seconds"] + exported, 3)
            rec["export_seconds"] = round(exported, 3)
        dest.write_bytes(tfl)
        return rec

    def release() -> None:
        """End the child converter and remove the SavedModels written for it."""
        isolate.close()
        for d in exports.values():
            d.cleanup()
        exports.clear()

    if max_accuracy_drop is None:
        _say(quiet, f"converting ({mode})")
        try:
            steps.append(build(keras_model, mode, out, "calibration", mode in quantize.ISOLATED_MODES))
        finally:
            release()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="edge-convert-candidates-"))
        qat_model = keras_model if qat else None
        best: tuple[int, float, int] | None = None
        try:
            for i, (name, c_mode, c_qat) in enumerate(CANDIDATES):
                if edgetpu and c_mode != "int8":
                    continue  # the Edge TPU runs full int8 only
                if c_qat and qat_model is None:
                    if source.flavor != "tf_keras":
                        continue
                    from converter.steps import qat as qat_step

                    try:
                        if qat_refusal is not None:
                            raise ConvertError(qat_refusal, "")
                        _say(quiet, "candidate int8+qat: quantization-aware training")
                        qat_model, rec = qat_step.qat(
                            _copy(base_model),
                            train,
                            epochs=epochs,
                            batch_size=batch_size,
                            learning_rate=learning_rate,
                            skip=qat_skip,
                            preserve_sparsity=prune is not None,
                            progress=progress,
                        )
                    except ConvertError as exc:
                        # A candidate that cannot be built is reported, and the search goes on.
                        candidates.append(_failed_candidate(name, c_mode, c_qat, exc.what))
                        continue
                    steps.append({**rec, "candidate": name})
                if qat and not c_qat and c_mode == "int8":
                    continue  # --qat asked for: the PTQ int8 candidate is replaced by the QAT one
                dest = tmp / f"{name}.tflite"
                _say(quiet, f"candidate {name}")
                try:  # both in a child Python: a C++ abort fails this candidate, not the search
                    rec = build(qat_model if c_qat else base_model, c_mode, dest, f"calib {name}", True)
                    assert splits is not None
                    t_out = evaluate.run_tflite_isolated(dest, splits.eval.x, name)
                except ConvertError as exc:
                    candidates.append(_failed_candidate(name, c_mode, c_qat, exc.what))
                    continue
                mt = evaluate.metrics(float_out, t_out, eval_y)
                size = dest.stat().st_size
                within = mt["accuracy_drop"] is not None and mt["accuracy_drop"] <= max_accuracy_drop
                candidates.append(
                    {
                        "name": name,
                        "mode": c_mode,
                        "qat": c_qat,
                        "size_bytes": size,
                        "tflite_accuracy": mt["tflite_accuracy"],
                        "accuracy_drop": mt["accuracy_drop"],
                        "top1_agreement": mt["top1_agreement"],
                        "seconds": rec["seconds"],
                        "within_budget": within,
                        "chosen": False,
                        "_rec": rec,
                        "_path": dest,
                    }
                )
                if within:
                    key = (size, -(mt["tflite_accuracy"] or 0.0), i)
                    if best is None or key < best:
                        best = key
            if best is None:
                raise ConvertError(
                    f"no candidate stays within --max-accuracy-drop {max_accuracy_drop} pp: "
                    + ", ".join(
                        f"{c['name']} {c['accuracy_drop']} pp"
                        if c.get("error") is None
                        else f"{c['name']} not built ({c['error']})"
                        for c in candidates
                    ),
                    "raise the budget, fine-tune with more --epochs, or pass more --data",
                )
            chosen = next(
                c
                for c in candidates
                if c["size_bytes"] == best[0] and -(c["tflite_accuracy"] or 0.0) == best[1] and c.get("_path")
            )
            chosen["chosen"] = True
            shutil.copyfile(chosen["_path"], out)
            mode = chosen["mode"]
            steps.append({**chosen["_rec"], "candidate": chosen["name"]})
        finally:
            for c in candidates:
                c.pop("_rec", None)
                c.pop("_path", None)
            shutil.rmtree(tmp, ignore_errors=True)
            release()

    metrics = evaluate.metrics(None, None, None)
    if splits is not None:
        t0 = time.perf_counter()
        _say(quiet, f"evaluating {out.name} on {len(splits.eval)} samples (ai-edge-litert)")
        if mode in quantize.ISOLATED_MODES and max_accuracy_drop is None:
            try:  # the first run of a risky mode: a kernel abort must not take edge-convert with it
                t_out = evaluate.run_tflite_isolated(out, splits.eval.x, mode)
            finally:
                isolate.close()
        else:
            t_out = evaluate.run_tflite(out, splits.eval.x, progress=progress)
        metrics = evaluate.metrics(float_out, t_out, eval_y)
        steps.append(
            {
                "name": "evaluate",
                "seconds": round(time.perf_counter() - t0, 3),
                "runtime": "ai_edge_litert",
                "samples": len(splits.eval),
            }
        )
        if eval_y is None:
            hints.append(
                "the data has no labels (y): accuracy is not measured, only agreement with the float model"
            )

    t0 = time.perf_counter()
    compatibility = compat.check(out, tflite_python=tflite_runtime_python, edgetpu=edgetpu)
    steps.append({"name": "compatibility", "seconds": round(time.perf_counter() - t0, 3)})
    in_dt, out_dt = quantize.io_dtypes(mode, io_dtype)
    figures = report.file_figures(out)
    figures["report_path"] = str(report.report_path(out))
    figures["edgetpu_path"] = compatibility["edgetpu"]["compiler"].get("output")
    rep: dict[str, Any] = {
        "tool": "edge-convert",
        "version": edge.__version__,
        "created": utc_iso(timespec="seconds"),
        "input": source.describe(),
        "output": figures,
        "data": data_block,
        "steps": steps,
        "quantization": {"mode": mode, "input_dtype": in_dt, "output_dtype": out_dt, "chosen_by": chosen_by},
        "metrics": metrics,
        "metadata": meta,
        "compatibility": compatibility,
        "candidates": candidates,
        "max_accuracy_drop": max_accuracy_drop,
        "warnings": warnings,
        "hints": hints,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if write_report:
        report.write(rep, report.report_path(out))
    return rep
