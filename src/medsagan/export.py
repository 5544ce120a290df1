"""`medsagan export`: a run's detector as ONNX (scores without PyTorch) or its generator as safetensors.

ONNX: one input `image`, float32 [B, C, S, S] in [-1, 1] (grey or RGB as the run, resized to S, scaled as
x / 127.5 - 1); outputs `score` [B], `anomaly_map` [B, 1, S, S] and `restored` [B, C, S, S]; the batch is
dynamic. The model's metadata holds what a caller needs to prepare images and decide: image size,
channels, threshold and heatmap scale (when the run is calibrated), the configuration and medsagan's version.
"""

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from .errors import DataError, RunError
from .evaluate.scoring import SCORING_BATCH, Scores
from .files import atomic_write, check_output
from .runs import RunDir, load_detector

OPSET = 18
FORMATS = ("onnx", "safetensors")


def _version() -> str:
    try:
        return version("medsagan")
    except PackageNotFoundError:
        return "unknown"


def run_metadata(run_dir: str | Path) -> dict[str, str]:
    """String metadata describing a run's model: preprocessing, decision and provenance."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    _, selection = run.load_best()
    calibration = run.load_calibration(selection)
    meta = {
        "medsagan_version": _version(),
        "image_size": str(cfg.model.image_size),
        "channels": str(cfg.model.channels),
        "input_range": "[-1, 1]: uint8 pixels / 127.5 - 1 after resizing (PIL bilinear)",
        "score": "mean of the anomaly map |x - x'| / 2; abnormal when score >= threshold",
        "selection": json.dumps(selection.to_dict()),
        "config": json.dumps(cfg.to_dict()),
    }
    if calibration is not None:
        meta["threshold"] = repr(calibration.threshold.value)
        meta["threshold_rule"] = f"{calibration.threshold.rule}, fitted on {calibration.threshold.fitted_on}"
        meta["heatmap_vmax"] = repr(calibration.heatmap_vmax)
    return meta


def export(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Write the run's model to `out` in `fmt` ("onnx" or "safetensors")."""
    check_output(out)
    if fmt not in FORMATS:
        raise RunError(f"export format {fmt!r} is unknown; choose one of {', '.join(FORMATS)}")
    detector, cfg, _ = load_detector(run_dir, "cpu")
    meta = run_metadata(run_dir)
    if fmt == "safetensors":
        from safetensors.torch import save

        weights = {k: v.contiguous() for k, v in detector.generator.state_dict().items()}
        return atomic_write(out, lambda handle: handle.write(save(weights, metadata=meta)))
    return _export_onnx(detector, cfg.model.channels, cfg.model.image_size, meta, Path(out))


def _export_onnx(detector, channels: int, size: int, meta: dict[str, str], out: Path) -> Path:
    try:
        import onnx
    except ImportError:
        raise RunError("ONNX export needs the onnx and onnxscript packages: pip install 'medsagan[export]'") from None
    example = torch.rand(2, channels, size, size) * 2 - 1
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(
        detector.eval(),
        (example,),
        input_names=["image"],
        output_names=["score", "anomaly_map", "restored"],
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    model = program.model_proto
    onnx.helper.set_model_props(model, {**meta, "opset": str(OPSET)})
    return atomic_write(out, lambda handle: handle.write(model.SerializeToString()))


class OnnxDetector:
    """An exported model run by onnxruntime: `score(images)` as score_images does, without PyTorch's model."""

    def __init__(self, path: str | Path):
        try:
            import onnxruntime
        except ImportError:
            raise RunError(f"{path}: scoring an ONNX model needs onnxruntime: pip install onnxruntime") from None
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for a bad file
            raise RunError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:160]})") from None
        self.meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if "image_size" not in self.meta:
            raise RunError(f"{path}: an ONNX model without medsagan's metadata; export it with `medsagan export`")
        self.image_size, self.channels = int(self.meta["image_size"]), int(self.meta["channels"])
        self.threshold = float(self.meta["threshold"]) if "threshold" in self.meta else None
        self.heatmap_vmax = float(self.meta["heatmap_vmax"]) if "heatmap_vmax" in self.meta else None
        self.dataset = json.loads(self.meta["config"])["data"]["path"]

    def score(self, images: torch.Tensor, keep_maps: bool = True) -> Scores:
        """uint8 [N, C, S, S] -> Scores, in padded chunks of SCORING_BATCH as the PyTorch path."""
        if images.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise DataError(f"images of shape {list(images.shape[1:])} do not fit this model's input")
        scores, maps, restored = [], [], []
        for start in range(0, images.shape[0], SCORING_BATCH):
            chunk = images[start : start + SCORING_BATCH].numpy().astype(np.float32) / 127.5 - 1.0
            real = chunk.shape[0]
            padded = np.concatenate([chunk, np.zeros((SCORING_BATCH - real, *chunk.shape[1:]), np.float32)])
            score, amap, back = self.session.run(None, {"image": padded})
            scores.append(score[:real])
            maps.append(amap[:real, 0])
            restored.append(back[:real])
        return Scores(np.concatenate(scores), np.concatenate(maps), np.concatenate(restored))
