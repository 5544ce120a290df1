"""Heatmap panels: input, restored image and the anomaly map as a colour overlay (paper Fig. 3).

All panels of a run share one colour scale (`vmax`, from the run's calibration), so they can be compared.
"""

from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw

from ..data.dataset import to_model_range, to_uint8
from ..files import atomic_write

COLORMAP = "jet"  # the official code's heatmap colour map (cv2 COLORMAP_JET)
PANEL_SIDE = 192


def to_rgb(image: np.ndarray) -> np.ndarray:
    """[C, S, S] in [-1, 1] -> uint8 [S, S, 3]."""
    pixels = to_uint8(image)
    return (np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels).transpose(1, 2, 0)


def overlay(image: np.ndarray, amap: np.ndarray, vmax: float) -> np.ndarray:
    """The anomaly map [S, S] on a fixed 0..vmax scale, blended over the input: more opaque where higher."""
    level = np.clip(amap / max(vmax, 1e-8), 0, 1)
    colour = matplotlib.colormaps[COLORMAP](level)[..., :3]
    alpha = (0.25 + 0.55 * level)[..., None]
    base = to_rgb(image).astype(np.float64) / 255
    blended = ((1 - alpha) * base + alpha * colour).clip(0, 1)
    return (blended * 255).round().astype(np.uint8)


def panel(
    image: np.ndarray,
    restored: np.ndarray,
    amap: np.ndarray,
    vmax: float,
    caption: str,
    smooth: float = 0.0,
    map_name: str = "|x - x'|/2",
) -> Image.Image:
    """One PIL image: a caption line over [input | restored | heatmap], each PANEL_SIDE px wide.

    `map_name`: what the map is (the inference Detector's `map_name`), for the legend line.
    `smooth`: the heatmap drawn blurred by a Gaussian of this sigma in pixels, for reading only; the score and
    the saved maps never change.
    """
    if smooth > 0:
        from scipy.ndimage import gaussian_filter

        amap = gaussian_filter(amap, sigma=smooth)
    tiles = [to_rgb(image), to_rgb(restored), overlay(image, amap, vmax)]
    resized = [Image.fromarray(t).resize((PANEL_SIDE, PANEL_SIDE), Image.BILINEAR) for t in tiles]
    header = 34
    canvas = Image.new("RGB", (3 * PANEL_SIDE, PANEL_SIDE + header), "white")
    for i, tile in enumerate(resized):
        canvas.paste(tile, (i * PANEL_SIDE, header))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), caption, fill="black")
    blurred = f", drawn blurred (sigma {smooth:g} px)" if smooth > 0 else ""
    legend = f"input | restored | {map_name}, colour scale 0 to {vmax:.3f}{blurred}"
    draw.text((4, 17), legend, fill="dimgray")
    return canvas


def save_panel(path: str | Path, image: Image.Image) -> Path:
    """Write a panel as PNG atomically."""
    return atomic_write(path, lambda handle: image.save(handle, format="PNG"))


def gallery(model, source, ids: list[str], captions: list[str]) -> list[Image.Image]:
    """Panels of a few already-scored images: only these are decoded and restored again, for their maps.

    `model` is an inference.Detector; its colour scale is the run's, or these images' own without one.
    """
    import torch

    if not ids:
        return []
    decoded = np.stack([source.decode(item, model.image_size, model.channels) for item in ids])
    images = torch.from_numpy(model.normalise(decoded))
    restored = model.score(images)
    vmax = model.heatmap_scale(restored)
    return [
        panel(
            to_model_range(images[i]).numpy(),
            restored.restored[i],
            restored.maps[i],
            vmax,
            captions[i],
            map_name=model.map_name,
        )
        for i in range(len(ids))
    ]
