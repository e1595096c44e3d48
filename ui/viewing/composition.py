"""One displayed frame from one slice: VOI window to 8-bit grey, then the AI evidence over it,
as plain numpy so that what the radiologist sees is testable pixel by pixel without Qt.

Overlays never hide the image: the CAM heatmap's alpha follows the activation (cold areas
stay clear) and is capped by the opacity; haemorrhage classes can be drawn as an outline only.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ui.viewing.overlays import UNKNOWN_CLASS_COLOUR

LabelStyle = Literal["fill", "outline"]
LABEL_STYLES: tuple[LabelStyle, ...] = ("fill", "outline")
CAM_FLOOR = 0.2  # activations below this fraction of the maximum are not drawn at all


@dataclass(frozen=True)
class LabelLayer:
    """The segmentation of the displayed slice and how to draw it."""

    plane: np.ndarray               # uint8 (rows, cols); value k is classes[k-1]
    classes: tuple[str, ...]
    shown: frozenset[str]
    style: LabelStyle = "fill"
    colours: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)  # per class, from its spec


@dataclass(frozen=True)
class FrameRecipe:
    """Everything besides the pixels that decides the frame; the view state writes it."""

    window: tuple[float, float]     # (centre, width) in modality units
    invert: bool = False            # MONOCHROME1
    cam: np.ndarray | None = None   # uint8 heatmap at image size, or None when not shown
    labels: LabelLayer | None = None
    opacity: float = 0.45


def compose_frame(pixels: np.ndarray, recipe: FrameRecipe) -> np.ndarray:
    """uint8 grey (rows, cols) when nothing is overlaid, else RGB (rows, cols, 3)."""
    grey = window_to_grey(pixels, recipe.window[0], recipe.window[1], recipe.invert)
    frame = grey
    if recipe.cam is not None:
        frame = blend_cam(grey_to_rgb(grey), recipe.cam, recipe.opacity)
    layer = recipe.labels
    if layer is not None and layer.shown:
        frame = blend_labels(frame if frame.ndim == 3 else grey_to_rgb(grey), layer.plane, layer.classes,
                             layer.shown, recipe.opacity, layer.style, layer.colours)
    return frame


def window_to_grey(pixels: np.ndarray, centre: float, width: float, invert: bool = False) -> np.ndarray:
    """Linear VOI window to uint8 (MONOCHROME1 inverted after windowing)."""
    width = max(float(width), 1.0)
    lo = float(centre) - width / 2.0
    scaled = (pixels - np.float32(lo)) * np.float32(255.0 / width)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    grey = scaled.astype(np.uint8)
    if invert:
        np.subtract(255, grey, out=grey)
    return grey


def _jet_colormap() -> np.ndarray:
    x = np.linspace(0.0, 1.0, 256)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    return (np.stack([r, g, b], axis=1) * 255).astype(np.uint8)


CAM_COLORMAP = _jet_colormap()


def grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def blend_cam(rgb: np.ndarray, cam: np.ndarray, opacity: float) -> np.ndarray:
    """Heatmap over the image; cam is uint8 0..255 at image size."""
    if cam.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap {cam.shape} does not match the image {rgb.shape[:2]}")
    # Alpha ramps from 0 at the floor to the slider's opacity at the peak: weak activations fade out.
    weight = cam.astype(np.float32) * np.float32(1.0 / 255.0)
    alpha = np.clip((weight - np.float32(CAM_FLOOR)) * np.float32(1.0 / (1.0 - CAM_FLOOR)), 0.0, 1.0)
    alpha *= np.float32(max(0.0, min(1.0, opacity)))
    colour = CAM_COLORMAP[cam].astype(np.float32)
    out = rgb.astype(np.float32)
    out += (colour - out) * alpha[:, :, None]
    return out.astype(np.uint8)


def outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (4-neighbourhood), no scipy needed."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def blend_labels(rgb: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], enabled: Collection[str],
                 opacity: float, mode: LabelStyle = "fill",
                 colours: Mapping[str, tuple[int, int, int]] | None = None) -> np.ndarray:
    """Per-class colours (a class without one is magenta); label value k is classes[k-1]."""
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"segmentation {labels.shape} does not match the image {rgb.shape[:2]}")
    out = rgb.copy()
    opacity = max(0.0, min(1.0, opacity))
    for k, name in enumerate(classes, start=1):
        if name not in enabled:
            continue
        mask = labels == k
        if not mask.any():
            continue
        colour = np.array((colours or {}).get(name, UNKNOWN_CLASS_COLOUR), dtype=np.float32)
        if mode == "outline":
            out[outline(mask)] = colour.astype(np.uint8)
        else:
            region = out[mask].astype(np.float32)
            out[mask] = (region + (colour - region) * opacity).astype(np.uint8)
    return out
