"""Intensity normalisation per image (`data.intensity`), one function for every path into the model.

Hospitals' images differ in exposure, windowing and scanner far more than the images of one public set; a
restoration model trained on one look then scores the look, not the anatomy. Each image is normalised on
its own, after decoding and resizing and before the model, identically in training, evaluation, predict,
serve and the ONNX path (whose metadata carries the setting):

- "none": the pixels as decoded (the paper);
- "equalize": global histogram equalisation (scikit-image);
- "clahe": the percentile window below, then contrast-limited adaptive histogram equalisation
  (scikit-image, clip limit 0.01, tiles of an eighth of the side), which evens exposure while keeping local
  contrast (CLAHE alone keeps a dark image darker: it never stretches the global range);
- "percentile": a window from the 1st to the 99th percentile of the image, stretched to the full range.

Colour images are normalised per channel, so hue shifts a little where channels differ in range.
"""

import numpy as np

METHODS = ("none", "equalize", "clahe", "percentile")
CLIP_LIMIT = 0.01
WINDOW = (1.0, 99.0)


def _window(plane: np.ndarray) -> np.ndarray | None:
    """The plane's 1st-99th percentile window stretched to [0, 1]; None for a flat plane."""
    low, high = np.percentile(plane, WINDOW)
    if high <= low:
        return None
    return np.clip((plane.astype(np.float64) - low) / (high - low), 0.0, 1.0)


def _plane(plane: np.ndarray, method: str) -> np.ndarray:
    from skimage import exposure

    if method == "equalize":
        out = exposure.equalize_hist(plane, nbins=256)
    else:
        out = _window(plane)
        if out is None:
            return plane
        if method == "clahe":
            out = exposure.equalize_adapthist(out, kernel_size=max(2, plane.shape[0] // 8), clip_limit=CLIP_LIMIT)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def normalise(images: np.ndarray, method: str) -> np.ndarray:
    """uint8 images [C, S, S] or [N, C, S, S], each plane normalised by `method`; "none" returns them as given."""
    if method == "none":
        return images
    if method not in METHODS:
        raise ValueError(f"unknown intensity normalisation {method!r}; one of {', '.join(METHODS)}")
    flat = images.reshape(-1, *images.shape[-2:])
    out = np.stack([_plane(plane, method) for plane in flat]) if len(flat) else flat.copy()
    return out.reshape(images.shape)
