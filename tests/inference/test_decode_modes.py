"""Decoding real files written by Pillow: every mode scaled (not clipped), bombs refused from the header,
JPEG draft decoding close to a full decode, all through a real model's input spec."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.errors import InputError
from edge.inference.preprocess import decode_image, image_to_tensor
from edge.model.runtime import LoadedModel, TensorSpec, load_model
from tests.support.process import run_python

MODEL = "mobilenet_v1_0.25_128_quant.tflite"  # uint8 input 1x128x128x3: raw pixels reach the tensor


@pytest.fixture(scope="module")
def model(coral: Path) -> LoadedModel:
    return load_model(coral / MODEL, threads=1)


@pytest.fixture(scope="module")
def spec(model: LoadedModel) -> TensorSpec:
    return model.inputs[0]


def _saved(img: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def _ramp16() -> np.ndarray:
    """128x128 uint16 covering 0..65535 (the model's size: no resize, so values compare exactly)."""
    return (
        (np.arange(128 * 128, dtype=np.uint32) * 65535 // (128 * 128 - 1)).astype(np.uint16).reshape(128, 128)
    )


def test_16bit_grayscale_png_is_scaled_not_clipped(spec: TensorSpec) -> None:
    ramp = _ramp16()
    raw = _saved(Image.fromarray(ramp), "PNG")
    img = decode_image(raw)
    assert img.mode.startswith("I")  # Pillow keeps the 16 bits
    x = image_to_tensor(img, spec)[0]
    want = np.rint(ramp / 257.0).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(x[..., c], want)
    assert 0 < (x == 255).mean() < 0.01  # convert("RGB") made ~99.6 % of it white


def test_16bit_big_endian_and_ppm(spec: TensorSpec) -> None:
    ramp = _ramp16()
    big = Image.frombytes("I;16B", (128, 128), ramp.astype(">u2").tobytes())
    want = np.rint(ramp / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(image_to_tensor(big, spec)[0, ..., 1], want)
    dark = (ramp // 512).astype(np.uint16)  # a dark 16-bit PPM (values <= 127) stays dark
    ppm = decode_image(_saved(Image.fromarray(dark), "PPM"))
    np.testing.assert_array_equal(
        image_to_tensor(ppm, spec)[0, ..., 0], np.rint(dark / 257.0).astype(np.uint8)
    )


def test_32bit_int_and_float_modes_are_scaled(spec: TensorSpec) -> None:
    ramp = _ramp16()
    as_i = Image.fromarray(ramp.astype(np.int32), "I")
    np.testing.assert_array_equal(
        image_to_tensor(as_i, spec)[0, ..., 0], np.rint(ramp / 257.0).astype(np.uint8)
    )
    unit = ramp.astype(np.float32) / 65535.0  # float images in [0, 1]
    got = image_to_tensor(Image.fromarray(unit, "F"), spec)[0, ..., 2]
    np.testing.assert_array_equal(got, np.rint(unit * 255.0).astype(np.uint8))


def test_16bit_resized_keeps_its_range(spec: TensorSpec) -> None:
    big = np.full((300, 500), 40000, dtype=np.uint16)
    x = image_to_tensor(decode_image(_saved(Image.fromarray(big), "PNG")), spec)
    assert np.all(np.abs(x.astype(int) - round(40000 / 257)) <= 1)


def test_alpha_and_palette_transparency_over_white(spec: TensorSpec) -> None:
    la = Image.new("LA", (128, 128), (40, 255))
    la.paste((40, 0), (0, 0, 64, 128))  # left half transparent
    x = image_to_tensor(decode_image(_saved(la, "PNG")), spec)[0]
    assert np.all(x[:, :64] == 255) and np.all(x[:, 64:] == 40)

    pal = Image.new("P", (128, 128), 1)
    pal.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    pal.paste(0, (0, 0, 128, 32))  # index 0 (black in the palette) is the transparent one
    raw = _saved(pal, "PNG", transparency=0)
    img = decode_image(raw)
    assert img.mode == "P" and "transparency" in img.info
    x = image_to_tensor(img, spec)[0]
    assert np.all(x[:32] == 255)  # transparent: white, not the palette's black
    assert np.all(x[32:] == np.array([200, 30, 30], dtype=np.uint8))
    gif = image_to_tensor(decode_image(_saved(pal, "GIF", transparency=0)), spec)[0]
    assert np.all(gif[:32] == 255) and np.all(gif[32:] == np.array([200, 30, 30], dtype=np.uint8))


def test_cmyk_jpeg_and_bilevel(spec: TensorSpec) -> None:
    cmyk = Image.new("CMYK", (128, 128), (0, 255, 255, 0))  # pure red in CMYK
    img = decode_image(_saved(cmyk, "JPEG", quality=95))
    assert img.mode == "CMYK"
    x = image_to_tensor(img, spec)[0].astype(int)
    assert np.all(np.abs(x - np.array([255, 0, 0])) <= 6)
    bw = Image.new("1", (128, 128), 0)
    bw.paste(1, (0, 0, 128, 64))
    y = image_to_tensor(decode_image(_saved(bw, "BMP")), spec)[0]
    assert np.all(y[:64] == 255) and np.all(y[64:] == 0)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height 8-bit grayscale, with a tiny (truncated) IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_bomb_refused_from_header_with_the_config_key() -> None:
    with pytest.raises(InputError) as err:
        decode_image(_png_header_only(10_000, 5_000), name="bomb.png")  # 50 Mpx > 40 Mpx default
    assert "decompression bomb" in err.value.what and "50000000" in err.value.what
    assert (
        "preprocess.max_image_pixels" in err.value.fix and "EDGE_PREPROCESS_MAX_IMAGE_PIXELS" in err.value.fix
    )
    # Past Pillow's own limit the message is as clear (Pillow refuses in Image.open)
    with pytest.raises(InputError) as err:
        decode_image(_png_header_only(100_000, 100_000), max_pixels=10**11, name="huge.png")
    assert "decompression bomb" in err.value.what and "downscale" in err.value.fix


PEAK_RSS = """
import resource, sys
from pathlib import Path
from edge.inference.preprocess import decode_image, image_to_tensor
from edge.model.runtime import load_model
spec = load_model(sys.argv[1], threads=1).inputs[0]
raw = Path(sys.argv[2]).read_bytes()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    image_to_tensor(decode_image(raw, fit=(128, 128)), spec)
    outcome = "decoded"
except Exception as exc:
    outcome = type(exc).__name__
print(outcome, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def _peak_rss_mb(model: Path, image: Path) -> tuple[str, float]:
    out = run_python("-c", PEAK_RSS, model, image, timeout=120, check=True).stdout.split()
    return out[0], float(out[1])


def test_memory_bounded_for_16bit_40mpx_png_and_bombs(coral: Path, tmp_path: Path) -> None:
    # A ~100 KB 16-bit PNG of 40 Mpx (at the default limit): decoded it is 80 MB, and nothing more
    # full-sized may be made (convert("RGB") went through 32-bit I and RGBX: ~300 MB).
    wide = tmp_path / "wide16.png"
    Image.fromarray(np.zeros((5000, 8000), dtype=np.uint16)).save(wide)
    assert wide.stat().st_size < 200_000
    outcome, grew = _peak_rss_mb(coral / MODEL, wide)
    assert outcome == "decoded" and grew < 120, grew
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(10_000, 5_000))
    outcome, grew = _peak_rss_mb(coral / MODEL, bomb)
    assert outcome == "InputError" and grew < 10, grew  # refused before a pixel is allocated


def _top1(model: LoadedModel, x: np.ndarray) -> int:
    model.interpreter.set_tensor(model.inputs[0].index, x)
    model.interpreter.invoke()
    y = model.interpreter.get_tensor(model.outputs[0].index)[0]
    return int(np.argsort(y)[::-1][0])


@pytest.mark.parametrize("size", [(640, 480), (1600, 1200), (4032, 3024)])
def test_jpeg_draft_decode_close_to_full_decode(
    model: LoadedModel, coral: Path, size: tuple[int, int]
) -> None:
    spec = model.inputs[0]
    for photo in ("hot_dog.jpg", "cat.bmp"):
        raw = _saved(
            Image.open(coral / photo).convert("RGB").resize(size, Image.Resampling.BICUBIC),
            "JPEG",
            quality=90,
        )
        drafted = decode_image(raw, fit=(128, 128))
        assert drafted.size[0] < size[0] and drafted.size[0] >= 128 and drafted.size[1] >= 128  # DCT-scaled
        full = image_to_tensor(decode_image(raw), spec)
        fast = image_to_tensor(drafted, spec)
        diff = np.abs(full.astype(int) - fast.astype(int))
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 8, (photo, diff.mean())
        assert _top1(model, full) == _top1(model, fast), photo


def test_pipeline_prepare_decodes_drafted_and_reports_source_refusals(
    model: LoadedModel, coral: Path
) -> None:
    from edge.inference.pipeline import Pipeline, Settings
    from edge.inference.preprocess import Normalization

    pipe = Pipeline(model, {}, Normalization(), Settings())
    raw = _saved(Image.open(coral / "hot_dog.jpg").resize((2048, 1536)), "JPEG", quality=90)
    drafted = image_to_tensor(decode_image(raw, fit=(128, 128)), model.inputs[0])
    np.testing.assert_array_equal(pipe.prepare(raw, "big.jpg").tensor, drafted)  # the agent's path drafts
    with pytest.raises(InputError, match="not followed"):
        pipe.prepare(InputError("link.jpg is a symbolic link ...: not followed", "copy it in"), "link.jpg")
