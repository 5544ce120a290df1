"""`medsagan export`: a run's detector as ONNX (scores without PyTorch) or its generator as safetensors.

ONNX: one input `image`, float32 [B, C, S, S] in [-1, 1] (grey or RGB as the run, resized to S, scaled as
x / 127.5 - 1); outputs `score` [B], `anomaly_map` [B, 1, S, S] and `restored` [B, C, S, S]; the batch is
dynamic. The model's metadata holds what a caller needs to prepare images and decide: image size,
channels, threshold and heatmap scale (when the run is calibrated), the configuration and medsagan's version.
"""

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from .errors import RunError
from .files import atomic_write, check_output
from .inference import Detector

OPSET = 18
FORMATS = ("onnx", "safetensors")


def _version() -> str:
    try:
        return version("medsagan")
    except PackageNotFoundError:
        return "unknown"


def run_metadata(model: Detector) -> dict[str, str]:
    """String metadata describing a run's model: preprocessing, decision and provenance."""
    cfg, selection, calibration = model.config, model.selection, model.calibration
    meta = {
        "medsagan_version": _version(),
        "image_size": str(cfg.model.image_size),
        "channels": str(cfg.model.channels),
        "input_range": "[-1, 1]: uint8 pixels / 127.5 - 1 after resizing (PIL bilinear) and intensity",
        "intensity": cfg.data.intensity,
        "score": "mean of |x - x'| / 2 over the image; abnormal when score >= threshold",
        "anomaly_map": model.map_name,
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
    model = Detector.open(run_dir, "cpu")
    if model.detector is None:
        raise RunError(f"{run_dir}: an exported model cannot be exported again; give its run folder")
    meta = run_metadata(model)
    if fmt == "safetensors":
        from safetensors.torch import save

        weights = {k: v.contiguous() for k, v in model.detector.generator.state_dict().items()}
        return atomic_write(out, lambda handle: handle.write(save(weights, metadata=meta)))
    return _export_onnx(model.detector, model.channels, model.image_size, meta, Path(out))


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
