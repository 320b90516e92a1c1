"""Data for calibration, fine-tuning and evaluation: .npz, .npy or an image folder (one sub-folder per class)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converter.errors import ConvertError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
NORMALIZATIONS = {"0-1": (1 / 255.0, 0.0), "-1-1": (2 / 255.0, -1.0), "0-255": (1.0, 0.0)}
MIN_CALIBRATION = 100


@dataclass(frozen=True)
class Dataset:
    x: np.ndarray  # float32, shaped like the model input (batch first)
    y: np.ndarray | None  # int64 class indices, or None without labels
    source: str
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx: np.ndarray) -> Dataset:
        return Dataset(self.x[idx], None if self.y is None else self.y[idx], self.source, self.class_names)


@dataclass(frozen=True)
class Splits:
    train: Dataset  # fine-tuning and calibration
    eval: Dataset
    calibration: Dataset
    warnings: tuple[str, ...]


def _fit_shape(
    x: np.ndarray, shape: tuple[int | None, ...], source: str, channels_first: bool = False
) -> np.ndarray:
    want = tuple(shape[1:])
    received = tuple(x.shape)
    got = tuple(x.shape[1:])
    # Data for an NCHW (ONNX/PyTorch) model comes as (N, C, H, W); the converted model takes NHWC.
    if channels_first and len(got) == 3 == len(want) and got == (want[2], want[0], want[1]) and got != want:
        x = np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))
        got = tuple(x.shape[1:])
    # A grayscale set stored as (N, H, W) for a model taking (N, H, W, 1) is common (MNIST, digits).
    if len(got) + 1 == len(want) and want[-1] == 1:
        x = x[..., None]
        got = tuple(x.shape[1:])
    ok = len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got))
    if not ok:
        exp = "(N, " + ", ".join("?" if w is None else str(w) for w in want) + ")"
        raise ConvertError(
            f"{source}: samples have shape {received}, the model expects {exp}",
            "reshape/resize the data to the model's input, or pass the matching model",
        )
    return x


def _labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1 or len(y) != n:
        raise ConvertError(
            f"{source}: y has shape {tuple(np.shape(y))}, expected ({n},) class indices (or one-hot)",
            "save labels as y with one integer class per sample",
        )
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise ConvertError(
                f"{source}: y has dtype {y.dtype}, expected integer class indices",
                "map class names to integers 0..K-1 before saving",
            )
    return y.astype(np.int64)


def _as_float(x: np.ndarray, source: str) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ConvertError(
            f"{source}: x has dtype {x.dtype}, expected numbers (float32 or uint8)",
            "store the samples as a numeric array",
        )
    return x.astype(np.float32)


def _load_images(folder: Path, shape: tuple[int | None, ...], normalize: str) -> Dataset:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise ConvertError(
            f"{folder} has no sub-folders; an image folder needs one sub-folder per class",
            "arrange images as FOLDER/<class name>/<image>.png, or pass an .npz with x and y",
        )
    from PIL import Image

    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ConvertError(
            f"image folders need a model with a fixed (N, H, W, C) input; this one takes {shape}",
            "pass the data as .npz instead",
        )
    h, w, c = int(shape[1]), int(shape[2]), shape[3] or 3
    if c not in (1, 3):
        raise ConvertError(
            f"the model takes {c} channels; image folders give 1 (grayscale) or 3 (RGB)",
            "pass the data as .npz instead",
        )
    scale, offset = NORMALIZATIONS[normalize]
    xs, ys = [], []
    for label, name in enumerate(classes):
        for p in sorted((folder / name).iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(p) as img:
                    small = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR)
                    arr = np.asarray(small, dtype=np.float32)
            except OSError as exc:
                raise ConvertError(f"cannot read image {p}: {exc}", "remove or re-save the file") from exc
            xs.append(arr[..., None] if c == 1 else arr)
            ys.append(label)
    if not xs:
        raise ConvertError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}/<class>/",
            "put the images in one sub-folder per class",
        )
    x = np.stack(xs) * np.float32(scale) + np.float32(offset)
    return Dataset(x.astype(np.float32), np.asarray(ys, dtype=np.int64), str(folder), tuple(classes))


def load(
    path: str | Path, shape: tuple[int | None, ...], *, normalize: str = "0-1", channels_first: bool = False
) -> Dataset:
    """Read a data set and check it against the model's input shape (expected vs received on mismatch)."""
    path = Path(path)
    if not path.exists():
        raise ConvertError(
            f"data not found: {path}", f"check the path (relative paths start at {Path.cwd()})"
        )
    if path.is_dir():
        return _load_images(path, shape, normalize)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "x" not in z.files:
                    raise ConvertError(
                        f"{path} has arrays {sorted(z.files)}, expected x (samples) and y (labels)",
                        "np.savez(path, x=samples, y=labels)",
                    )
                x = z["x"]
                y = z["y"] if "y" in z.files else None
        elif suffix == ".npy":
            x, y = np.load(path, allow_pickle=False), None
        else:
            raise ConvertError(
                f"unsupported data {path.name!r}: expected .npz (x, y), .npy (x) or an image folder",
                "np.savez(path, x=samples, y=labels)",
            )
    except ValueError as exc:  # pickled object arrays, truncated files
        raise ConvertError(f"cannot read {path}: {exc}", "save plain numeric arrays with np.savez") from exc
    x = _fit_shape(_as_float(np.asarray(x), str(path)), shape, str(path), channels_first)
    return Dataset(x, None if y is None else _labels(y, len(x), str(path)), str(path))


def split(
    data: Dataset, *, eval_split: float, eval_data: Dataset | None, calibration_samples: int, seed: int = 0
) -> Splits:
    """Shuffle once, hold out an eval split (unless eval_data is given) and pick calibration samples."""
    if eval_data is None and not 0.0 < eval_split < 1.0:
        raise ConvertError(
            f"--eval-split must be between 0 and 1; received {eval_split}",
            "use e.g. 0.2, or pass --eval-data",
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    if eval_data is None:
        n_eval = max(1, int(round(len(data) * eval_split)))
        ev, tr = data.take(order[:n_eval]), data.take(order[n_eval:])
    else:
        ev, tr = eval_data, data.take(order)
    if len(tr) == 0:
        raise ConvertError(
            f"{data.source}: no samples left for calibration after the eval split",
            "pass more data or --eval-data",
        )
    cal = tr.take(np.arange(min(calibration_samples, len(tr))))
    warnings = []
    if len(cal) < MIN_CALIBRATION:
        warnings.append(
            f"calibration uses only {len(cal)} samples (fewer than {MIN_CALIBRATION}); int8 ranges may "
            "be off: pass more data or raise --calibration-samples"
        )
    if cal.y is not None and tr.y is not None:
        missing = sorted(set(tr.y.tolist()) - set(cal.y.tolist()))
        if missing:
            warnings.append(
                f"calibration misses classes {missing[:20]}; raise --calibration-samples so every class "
                "is seen"
            )
    return Splits(train=tr, eval=ev, calibration=cal, warnings=tuple(warnings))
