"""Key-image pixels: greyscale image, coloured outlines or a heatmap, a legend line, and for an
unvalidated model a red banner burned into the pixels (numpy and Pillow only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BANNER_RGB = (200, 0, 0)


@dataclass(frozen=True)
class LegendEntry:
    text: str
    colour: tuple[int, int, int] | None = None   # a swatch before the text; None: text only


def _font(width: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(11, width // 42))


def grey_to_rgb(unit: np.ndarray) -> np.ndarray:
    """0..1 display values -> uint8 RGB."""
    grey = np.clip(np.rint(np.asarray(unit, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def window(hu: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Linear window to 0..1 display values."""
    return np.clip((np.asarray(hu, dtype=np.float64) - (centre - width / 2)) / width, 0.0, 1.0)


def outline(mask: np.ndarray, thickness: int = 2) -> np.ndarray:
    """The mask's border pixels (4-neighbour erosion), thickened inwards to ``thickness``."""
    inner = mask.copy()
    border = np.zeros_like(mask)
    for _ in range(max(1, thickness)):
        eroded = inner.copy()
        eroded[1:, :] &= inner[:-1, :]
        eroded[:-1, :] &= inner[1:, :]
        eroded[:, 1:] &= inner[:, :-1]
        eroded[:, :-1] &= inner[:, 1:]
        border |= inner & ~eroded
        inner = eroded
    return border


def draw_outlines(rgb: np.ndarray, labels: np.ndarray, colours: dict[int, tuple[int, int, int]]) -> np.ndarray:
    out = rgb.copy()
    for value, colour in colours.items():
        mask = labels == value
        if mask.any():
            out[outline(mask, thickness=max(1, rgb.shape[1] // 256))] = colour
    return out


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> RGB on a blue-cyan-yellow-red ramp."""
    x = heat.astype(np.float64) / 255.0
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return np.rint(np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def blend_heatmap(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Alpha grows with heat, so cold regions leave the radiograph as it is."""
    alpha = opacity * (heat.astype(np.float64) / 255.0)[..., None]
    return np.rint(rgb * (1 - alpha) + heat_colours(heat) * alpha).astype(np.uint8)


def _text_band(width: int, entries: Sequence[LegendEntry], background: tuple[int, int, int],
               foreground: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    font = _font(width)
    height = int(font.size * 1.6) if hasattr(font, "size") else 18
    band = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(band)
    x, pad = max(4, width // 100), max(3, height // 5)
    for entry in entries:
        if entry.colour is not None:
            draw.rectangle([x, pad, x + height - 2 * pad, height - pad], fill=entry.colour)
            x += height - pad
        draw.text((x, height / 2), entry.text, fill=foreground, font=font, anchor="lm")
        x += int(draw.textlength(entry.text, font=font)) + 2 * pad
    return np.asarray(band, dtype=np.uint8)


def compose(rgb: np.ndarray, legend: Sequence[LegendEntry], banner: str | None) -> np.ndarray:
    """Image with its one-line legend below and, when ``banner`` is given, a red warning band on top."""
    width = rgb.shape[1]
    parts = []
    if banner:
        parts.append(_text_band(width, [LegendEntry(banner)], BANNER_RGB))
    parts.append(rgb)
    parts.append(_text_band(width, legend, (0, 0, 0)))
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def banner_height(width: int) -> int:
    return _text_band(width, [LegendEntry("x")], BANNER_RGB).shape[0]
