"""Image -> input tensor, driven by the model's own input details.

Pure functions: the agent, edge-bench (real inputs) and the converter's
evaluation all call these, so a model sees exactly the same pixels everywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.errors import InputError
from edge.model.runtime import TensorSpec

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
# The formats Pillow's Image.preinit() registers. Naming them stops Image.open from importing Pillow's
# ~40 other plugins (~3 MB the agent would then keep for good) at the first junk file or TIFF/WebP.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "PPM")
# Refuse decompression bombs before Pillow allocates them (Pillow only warns below 2x its own limit).
DEFAULT_MAX_PIXELS = 40_000_000
PIXEL_LIMIT_KEY = "preprocess.max_image_pixels"  # the config key (and its variable) that raises the limit
PIXEL_LIMIT_ENV = "EDGE_PREPROCESS_MAX_IMAGE_PIXELS"


@dataclass(frozen=True)
class Normalization:
    """float = (pixel - mean) / std, then quantized with the input's scale and zero point.

    ``None`` for both means: for quantized inputs, feed raw pixels (uint8 as is,
    int8 shifted by 128), the convention of models quantized from [0,255]-range
    training; for float inputs, scale pixels to [0, 1].
    """

    mean: float | None = None
    std: float | None = None
    resample: str = "bilinear"


@dataclass(frozen=True)
class ImageLayout:
    height: int
    width: int
    channels: int  # 1 (grayscale) or 3 (RGB)
    has_channel_axis: bool


def image_layout(spec: TensorSpec) -> ImageLayout:
    """Where height, width and channels sit in an image model's input."""
    shape = spec.shape
    if len(shape) == 4 and shape[0] == 1 and shape[3] in (1, 3):
        return ImageLayout(shape[1], shape[2], shape[3], True)
    if len(shape) == 3 and shape[0] == 1:  # e.g. 1x28x28 grayscale (LSTM/MLP digit models)
        return ImageLayout(shape[1], shape[2], 1, False)
    if len(shape) == 3 and shape[2] in (1, 3):
        return ImageLayout(shape[0], shape[1], shape[2], True)
    raise InputError(
        f"model input {spec.name!r} has shape {list(shape)}, which is not an image "
        "(expected [1,H,W,1|3], [1,H,W] or [H,W,1|3])",
        "feed tensors instead of images (.npy), or use an image model",
    )


def decode_image(
    data: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str = "",
    fit: tuple[int, int] | None = None,
    mode: str = "RGB",
) -> Image.Image:
    """Decode and fully load an image, refusing junk and decompression bombs with a clear error.

    The pixel limit is checked on the size the header declares, before any pixel is allocated.
    ``fit=(width, height)``: the caller only needs that many pixels, so a JPEG is decoded at the
    smallest DCT scale (1/2, 1/4, 1/8) that still covers it (Pillow's ``draft``, in ``mode``): a
    4032x3024 photo for a 224x224 model decodes ~8x faster and in 1/64 of the memory.
    """
    label = name or (str(data) if isinstance(data, (str, Path)) else "<bytes>")
    try:
        raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    except OSError as exc:
        raise InputError(
            f"cannot read image {label}: {exc}", "check the file exists and is readable"
        ) from exc
    if not raw:
        raise InputError(f"image {label} is empty (0 bytes)", "send a JPEG, PNG or BMP file")
    try:
        img = Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS)  # reads the header only
        w, h = img.size
        if w * h > max_pixels:
            raise _bomb(label, w, h, max_pixels)
        if fit is not None and img.format == "JPEG":
            img.draft(mode, fit)
        img.load()
    except InputError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, when the config raised ours past it
        raise InputError(
            f"image {label} looks like a decompression bomb: {exc}",
            f"downscale it on the sender; Pillow refuses over {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels "
            f"whatever {PIXEL_LIMIT_KEY} says",
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputError(
            f"image {label} cannot be decoded: not a JPEG, PNG or BMP file (nor GIF, PPM); "
            f"it starts with {raw[:12]!r}",
            "send a JPEG, PNG or BMP file (convert other formats, e.g. TIFF or WebP, on the sender)",
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(
            f"image {label} cannot be decoded: {type(exc).__name__}: {exc}",
            "send a complete JPEG, PNG or BMP file (was it truncated in transit?)",
        ) from exc
    return img


def _bomb(label: str, w: int, h: int, max_pixels: int) -> InputError:
    return InputError(
        f"image {label} declares {w}x{h} = {w * h} pixels, over the limit of {max_pixels} "
        "(a decompression bomb, or a photo larger than this device is set to decode); refused "
        "before decoding",
        f"downscale it on the sender, or raise {PIXEL_LIMIT_KEY} in the config "
        f"(env {PIXEL_LIMIT_ENV}) if such images are expected and the device has the memory",
    )


def image_to_tensor(img: Image.Image, spec: TensorSpec, norm: Normalization | None = None) -> np.ndarray:
    """Convert, resize, normalize and quantize ``img`` into an array of the input's shape and dtype."""
    norm = norm or Normalization()
    layout = image_layout(spec)
    if norm.resample not in RESAMPLE:
        raise InputError(
            f"resample must be one of {', '.join(RESAMPLE)}; received {norm.resample!r}",
            "pick one of the listed filters",
        )
    pixels = to_pixels(img, (layout.width, layout.height), layout.channels, RESAMPLE[norm.resample])
    if layout.channels == 1 and layout.has_channel_axis:
        pixels = pixels[..., None]
    tensor = pixels_to_input(pixels, spec, norm)
    return tensor.reshape(spec.shape)


# Modes Pillow resizes losslessly as they are; their values are mapped to 0..255 after the resize, on the
# small image (converting a 40 Mpx 16-bit image first would cost ~4 bytes a pixel more, and clip it).
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("LA", "RGBA", "PA")
# Transparent pixels are shown over white (as a viewer would); their hidden colour is arbitrary.
BACKGROUND = 255


def to_pixels(img: Image.Image, size: tuple[int, int], channels: int, resample: int) -> np.ndarray:
    """Any Pillow mode -> uint8 pixels of ``size`` (H x W, or H x W x 3), scaled, never clipped.

    16-bit images (I;16*, and I from a PNG or PPM file) map 0..65535 to 0..255; other ``I`` and ``F``
    images (no fixed range) map their nominal range: [0, 1] when no value exceeds 1 (``F`` only),
    else 0..255, else 0..65535, else 0..max.
    Alpha (LA, RGBA, P with transparency) is composited over white; 1, P, CMYK and YCbCr are
    converted by Pillow, whose conversions of those modes are exact.
    """
    # 16-bit files: PNG and PPM decode to I;16 or I (whatever values they hold: a dark image stays dark)
    sixteen = img.mode.startswith("I;16") or (img.mode == "I" and img.format in ("PNG", "PPM"))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode not in WIDE_MODES + ALPHA_MODES + ("L", "RGB"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV
    if img.size != size:
        img = img.resize(size, resample)  # LA/RGBA: Pillow resizes premultiplied
    if img.mode in ALPHA_MODES:
        back = Image.new("RGBA", img.size, (BACKGROUND,) * 3 + (255,))
        img = Image.alpha_composite(back, img.convert("RGBA")).convert("RGB")
    if img.mode in WIDE_MODES:
        img = Image.fromarray(_wide_to_uint8(np.asarray(img), img.mode, sixteen), "L")
    img = img.convert("L" if channels == 1 else "RGB")
    return np.asarray(img, dtype=np.uint8)


def _wide_to_uint8(values: np.ndarray, mode: str, sixteen: bool) -> np.ndarray:
    real = values.astype(np.float32)
    if sixteen:
        top = 65535.0
    else:
        peak = float(real.max()) if real.size else 0.0
        top = next((t for t in (1.0, 255.0, 65535.0) if peak <= t and (t != 1.0 or mode == "F")), peak)
    real *= np.float32(255.0 / top)
    return np.clip(np.rint(real), 0, 255).astype(np.uint8)  # clip only below 0 (negative I/F values)


def pixels_to_input(pixels: np.ndarray, spec: TensorSpec, norm: Normalization) -> np.ndarray:
    """Map uint8 pixels to the input dtype (see :class:`Normalization`)."""
    dtype = spec.dtype
    if norm.mean is None and norm.std is None:
        if dtype == np.uint8:
            return pixels.astype(np.uint8, copy=False)
        if dtype == np.int8:
            return (pixels.astype(np.int16) - 128).astype(np.int8)
        if np.issubdtype(dtype, np.floating):
            # In place: one input-sized buffer instead of three (less to allocate, and less heap churn)
            real = pixels.astype(np.float32)
            real /= np.float32(255.0)
            return real.astype(dtype, copy=False)
        mean, std = 0.0, 255.0
    else:
        mean = 0.0 if norm.mean is None else float(norm.mean)
        std = 1.0 if norm.std is None else float(norm.std)
        if std == 0:
            raise InputError(
                "input std must not be 0", "set input_std to the value the model was trained with"
            )
    real = pixels.astype(np.float32)
    real -= np.float32(mean)
    real /= np.float32(std)
    return quantize(real, spec)


def quantize(real: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Real values -> the tensor's dtype, with its scale/zero point when quantized."""
    dtype = spec.dtype
    if np.issubdtype(dtype, np.floating):
        return real.astype(dtype, copy=False)
    if spec.quantized:
        real = real / spec.scale + spec.zero_point
    info = np.iinfo(dtype)
    return np.clip(np.round(real), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Tensor values -> float32 real values (identity for float tensors)."""
    if spec.quantized:
        return (values.astype(np.float32) - spec.zero_point) * spec.scale
    return values.astype(np.float32)


def random_input(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Seeded random tensor over the dtype's range (benchmark_model's default input)."""
    if np.issubdtype(spec.dtype, np.integer):
        info = np.iinfo(spec.dtype)
        return rng.integers(info.min, int(info.max) + 1, size=spec.shape, dtype=spec.dtype)
    if spec.dtype == np.bool_:
        return rng.integers(0, 2, size=spec.shape).astype(np.bool_)
    return rng.uniform(-1.0, 1.0, size=spec.shape).astype(spec.dtype)
