"""The one inference object: a trained detector, from a run folder or an exported ONNX file.

`Detector.open(path)` loads either. It turns files, in-memory arrays, tensors and uploaded bytes into the
uint8 images every reader produces, scores them in fixed-shape chunks (bit-identical whatever else is
scored with an image), and carries what a verdict and a heatmap need: the threshold and the colour scale
fitted on normals. The Python API, predict, serve, the report and the demo all score through it.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import Config, load_config, migrate
from .data.intensity import normalise
from .data.readers import decode_bytes, from_array, load_resized
from .errors import DataError, RunError
from .evaluate.calibration import HEATMAP_QUANTILE
from .evaluate.scoring import SCORING_BATCH, Scores, padded_chunks, score_images
from .evaluate.thresholds import verdict
from .models import AnomalyDetector
from .records import Calibration, Selection
from .runs import RunDir, load_detector

Backend = Callable[[torch.Tensor, bool], Scores]


@dataclass
class Detector:
    """A trained detector with its input geometry, its calibration and how it was selected.

    `detector` is the PyTorch module (None for an ONNX file); `selection` and `calibration` are None where the
    source has none (an ONNX file keeps only the threshold and colour scale, in its metadata).
    """

    backend: Backend
    image_size: int
    channels: int
    config: Config
    threshold: float | None
    heatmap_vmax: float | None
    detector: AnomalyDetector | None = None
    selection: Selection | None = None
    calibration: Calibration | None = None

    @classmethod
    def open(cls, path: str | Path, device: str = "auto") -> "Detector":
        """A run folder's selected generator, or an `.onnx` file written by `medsagan export`."""
        if Path(path).suffix.lower() == ".onnx":
            return _open_onnx(Path(path))
        module, cfg, selection = load_detector(path, device)
        calibration = RunDir(path).load_calibration(selection)
        return cls(
            backend=lambda images, keep_maps: score_images(module, images, keep_maps=keep_maps),
            image_size=cfg.model.image_size,
            channels=cfg.model.channels,
            config=cfg,
            threshold=calibration.threshold.value if calibration else None,
            heatmap_vmax=calibration.heatmap_vmax if calibration else None,
            detector=module,
            selection=selection,
            calibration=calibration,
        )

    @property
    def dataset(self) -> str:
        """The data the detector was trained on ("synthetic" for the built-in set)."""
        return self.config.data.path

    def read(self, item) -> np.ndarray:
        """One image as uint8 [C, S, S]: a path (PNG, JPEG, TIFF, BMP, DICOM) or an array, read as files are."""
        if isinstance(item, (str, Path)):
            return self.normalise(load_resized(item, self.image_size, self.channels))
        return self.normalise(from_array(item, self.image_size, self.channels))

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """An uploaded file's bytes as uint8 [C, S, S], decoded in memory exactly as the same file on disk."""
        return self.normalise(decode_bytes(data, name, self.image_size, self.channels))

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """Decoded uint8 images as the model was trained to see them (the run's `data.intensity`)."""
        return normalise(images, self.config.data.intensity)

    def prepare(self, images) -> torch.Tensor:
        """Images of any accepted kind as one tensor [N, C, S, S]: uint8, or float already in [-1, 1].

        Accepts a path, an array ([H, W], [H, W, C] or [C, H, W]; uint8, or float in [0, 1]), a list of them, or a
        tensor [N, C, S, S] (uint8, or float in [-1, 1]) at the model's size. Paths and arrays are normalised
        as the run's `data.intensity` says; a tensor is taken as the model's input already (as `read` gives).
        """
        if isinstance(images, torch.Tensor):
            expected = (self.channels, self.image_size, self.image_size)
            if images.ndim != 4 or tuple(images.shape[1:]) != expected:
                raise DataError(
                    f"a tensor of shape {list(images.shape)} does not fit this model's input [N, "
                    f"{', '.join(map(str, expected))}]"
                )
            return images
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        return torch.from_numpy(np.stack([self.read(item) for item in images]))

    def score(self, images, keep_maps: bool = True) -> Scores:
        """Deterministic scores (with anomaly maps and restorations when `keep_maps`) of `images`."""
        return self.backend(self.prepare(images), keep_maps)

    @property
    def map_name(self) -> str:
        """What the heatmap shows, for captions: the map and what was done to it (model.map_*)."""
        model = self.config.model
        blurred = f" blurred (sigma {model.map_sigma:g} px)" if model.map_sigma > 0 else ""
        less = " less the held-out normals' mean" if model.map_reference == "normals" else ""
        return f"|x - x'|/2{blurred}{less}"

    def heatmap_scale(self, scores: Scores) -> float:
        """The colour scale of heatmaps: fitted on validation normals, else these images' own maps."""
        return self.heatmap_vmax or float(np.quantile(scores.maps, HEATMAP_QUANTILE))

    def decide(self, score: float) -> str | None:
        """The verdict at the calibrated threshold ("abnormal" or "normal"); None when there is none."""
        return verdict(score, self.threshold) if self.threshold is not None else None


def _open_onnx(path: Path) -> Detector:
    """An exported model run by onnxruntime, scored in the same fixed chunks as the PyTorch path."""
    try:
        import onnxruntime
    except ImportError:
        raise RunError(f"{path}: scoring an ONNX model needs onnxruntime: pip install onnxruntime") from None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise RunError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:160]})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if "image_size" not in meta or "config" not in meta:
        raise RunError(f"{path}: an ONNX model without medsagan's metadata; export it with `medsagan export`")

    def backend(images: torch.Tensor, keep_maps: bool) -> Scores:
        scores, maps, restored = [], [], []
        for x, real in padded_chunks(images, SCORING_BATCH):
            score, amap, back = session.run(None, {"image": x.numpy()})
            scores.append(score[:real])
            maps.append(amap[:real, 0])
            restored.append(back[:real])
        kept = lambda parts: np.concatenate(parts) if keep_maps else None  # noqa: E731
        return Scores(np.concatenate(scores) if scores else np.zeros(0, np.float32), kept(maps), kept(restored))

    return Detector(
        backend=backend,
        image_size=int(meta["image_size"]),
        channels=int(meta["channels"]),
        config=load_config(overrides=migrate(json.loads(meta["config"]))),
        threshold=float(meta["threshold"]) if "threshold" in meta else None,
        heatmap_vmax=float(meta["heatmap_vmax"]) if "heatmap_vmax" in meta else None,
    )
