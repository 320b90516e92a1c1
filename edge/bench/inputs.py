"""The inputs a benchmark feeds: seeded random tensors, or real images preprocessed as the agent does."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.bench.core import Feed
from edge.errors import InputError
from edge.inference.preprocess import Normalization, decode_image, image_to_tensor, random_input
from edge.model.runtime import LoadedModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MAX_IMAGES = 256  # a benchmark needs variety, not a data set in RAM


def random_feeds(loaded: LoadedModel, seed: int = 0) -> tuple[list[Feed], str]:
    """One seeded random value per input, set once (as ``benchmark_model`` does)."""
    rng = np.random.default_rng(seed)
    return [{spec.index: random_input(spec, rng) for spec in loaded.inputs}], f"random (seed {seed})"


def image_files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(
            f"--input {path} does not exist", "give 'random', an image file or a folder of images"
        )
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(
            f"--input folder {path} has no images ({', '.join(IMAGE_SUFFIXES)})",
            "put JPEG/PNG/BMP files in it, or use --input random",
        )
    return files[:MAX_IMAGES]


def image_feeds(loaded: LoadedModel, path: Path, norm: Normalization | None = None) -> tuple[list[Feed], str]:
    """Every image decoded and turned into the model's input with the agent's preprocessing."""
    if len(loaded.inputs) != 1:
        raise InputError(
            f"{loaded.path.name} has {len(loaded.inputs)} inputs; images can feed only single-input models",
            "use --input random for this model",
        )
    spec = loaded.inputs[0]
    feeds: list[Feed] = [
        {spec.index: image_to_tensor(decode_image(f), spec, norm)} for f in image_files(path)
    ]
    return feeds, str(path)


def feeds_for(
    loaded: LoadedModel, source: str = "random", seed: int = 0, norm: Normalization | None = None
) -> tuple[list[Feed], str]:
    """``source`` is ``random``, an image file or a folder of images."""
    if source == "random":
        return random_feeds(loaded, seed)
    return image_feeds(loaded, Path(source), norm)
