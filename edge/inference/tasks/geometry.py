"""Where the original image sits inside the model's input, and the way back.

``stretch`` resizes the image to the input size (aspect ratio lost); ``letterbox`` scales it to fit
and pads the rest (YOLO's convention, grey 114). Decoders report boxes and keypoints normalized to the
*input*; :class:`Geometry` maps them to the *original image* so a box means the same thing whatever
the resize mode was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from edge.errors import InputError

RESIZE_MODES = ("stretch", "letterbox")
LETTERBOX_FILL = (114, 114, 114)  # what Ultralytics pads with: models trained that way expect it


@dataclass(frozen=True)
class Geometry:
    mode: str
    src_size: tuple[int, int]  # original image (width, height)
    dst_size: tuple[int, int]  # model input (width, height)
    content: tuple[
        int, int, int, int
    ]  # the image inside the input, in input pixels: left, top, width, height

    @classmethod
    def plan(cls, src_size: tuple[int, int], dst_size: tuple[int, int], mode: str = "stretch") -> Geometry:
        if mode not in RESIZE_MODES:
            raise InputError(
                f"--resize must be one of {', '.join(RESIZE_MODES)}; received {mode!r}",
                "use stretch (fill the input) or letterbox (keep the aspect ratio, pad)",
            )
        sw, sh = src_size
        dw, dh = dst_size
        if min(sw, sh, dw, dh) <= 0:
            raise InputError(f"image size {src_size} or input size {dst_size} is empty", "send a real image")
        if mode == "stretch" or (sw * dh == sh * dw):
            return cls(mode, (sw, sh), (dw, dh), (0, 0, dw, dh))
        scale = min(dw / sw, dh / sh)
        cw, ch = max(1, round(sw * scale)), max(1, round(sh * scale))
        return cls(mode, (sw, sh), (dw, dh), ((dw - cw) // 2, (dh - ch) // 2, cw, ch))

    def apply(self, img: Image.Image, resample: int = Image.Resampling.BILINEAR) -> Image.Image:
        """The model-sized image: resized (and padded for letterbox)."""
        left, top, cw, ch = self.content
        if (cw, ch) == self.dst_size:
            return img if img.size == self.dst_size else img.resize(self.dst_size, resample)
        fill: Any = LETTERBOX_FILL[0] if img.mode == "L" else LETTERBOX_FILL
        canvas = Image.new(img.mode, self.dst_size, fill)
        canvas.paste(img.resize((cw, ch), resample), (left, top))
        return canvas

    def _affine(self) -> tuple[float, float, float, float]:
        """Input-normalized -> image-normalized: v_img = (v_in - offset) * gain, per axis (y, x)."""
        left, top, cw, ch = self.content
        dw, dh = self.dst_size
        return top / dh, left / dw, dh / ch, dw / cw

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] (ymin, xmin, ymax, xmax) normalized to the input -> normalized to the image, clipped."""
        oy, ox, gy, gx = self._affine()
        out = (np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - (oy, ox, oy, ox)) * (gy, gx, gy, gx)
        return np.clip(out, 0.0, 1.0)

    def points_to_source(self, yx: np.ndarray) -> np.ndarray:
        """[..., 2] (y, x) normalized to the input -> normalized to the image (not clipped: a keypoint
        may lie just outside the picture, and its score says how sure the model is)."""
        oy, ox, gy, gx = self._affine()
        return (np.asarray(yx, dtype=np.float32) - (oy, ox)) * (gy, gx)

    def crop_content(self, plane: np.ndarray) -> np.ndarray:
        """The part of a [H, W] input-aligned map (e.g. a segmentation mask) that covers the image."""
        h, w = plane.shape[:2]
        left, top, cw, ch = self.content
        dw, dh = self.dst_size
        y0, y1 = round(top * h / dh), round((top + ch) * h / dh)
        x0, x1 = round(left * w / dw), round((left + cw) * w / dw)
        return plane[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "resize": self.mode,
            "image": list(self.src_size),
            "input": list(self.dst_size),
            "content": list(self.content),
        }
