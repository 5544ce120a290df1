"""`predict`: score any files, folders or DICOMs with a trained run; a CSV and one heatmap panel per image."""

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data.dataset import to_model_range
from .data.readers import SUFFIXES, is_dicom, load_resized
from .errors import DataError
from .evaluate.calibration import HEATMAP_QUANTILE
from .evaluate.results import scores_csv
from .evaluate.scoring import Scores, score_images
from .evaluate.thresholds import verdict
from .files import atomic_write_text, check_output
from .runs import RunDir, load_detector
from .viz.heatmaps import panel, save_panel

PREDICTIONS = "predictions.csv"


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for images and DICOMs (also DICOMs without a suffix)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p
                for p in item.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and (p.suffix.lower() in SUFFIXES or (p.suffix == "" and is_dicom(p)))
            )
            if not found:
                raise DataError(f"{item}: no images found (looked for {', '.join(SUFFIXES)} and DICOM files)")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    return files


def panel_names(files: list[Path]) -> list[str]:
    """Unique PNG names from the file stems; repeats get -2, -3, ..."""
    used: dict[str, int] = {}
    names = []
    for path in files:
        stem = path.stem or path.name
        used[stem] = used.get(stem, 0) + 1
        names.append(f"{stem}.png" if used[stem] == 1 else f"{stem}-{used[stem]}.png")
    return names


def check_output_folder(out_dir: Path, dataset: str, inputs: list[Path]) -> None:
    """Refuse an --out inside the run's dataset or an input folder, whose panels would be read as data later.

    A folder of other files is already refused by files.check_output, which predict calls first.
    """
    out = out_dir.resolve()
    folders = [Path(dataset).resolve()] if dataset and Path(dataset).is_dir() else []
    folders += [path.resolve() for path in inputs if path.is_dir()]
    for folder in folders:
        if out == folder or folder in out.parents:
            raise DataError(
                f"--out {out_dir} is inside {folder}, which holds images the run trained on or is scoring; its "
                "heatmap panels would be read as data later. Choose an --out outside it"
            )


@dataclass
class RunModel:
    """A run's selected detector with what predict needs from the run (the same fields as OnnxDetector)."""

    detector: torch.nn.Module
    image_size: int
    channels: int
    dataset: str
    threshold: float | None
    heatmap_vmax: float | None

    def score(self, images: torch.Tensor) -> Scores:
        """Deterministic scores, maps and restorations of uint8 images."""
        return score_images(self.detector, images, keep_maps=True)


def open_model(path: str | Path, device: str = "auto"):
    """A run directory, or an ONNX file written by `medsagan export`, ready to score."""
    if Path(path).suffix.lower() == ".onnx":
        from .export import OnnxDetector

        return OnnxDetector(path)
    detector, cfg, selection = load_detector(path, device)
    calibration = RunDir(path).load_calibration(selection)
    return RunModel(
        detector,
        cfg.model.image_size,
        cfg.model.channels,
        cfg.data.path,
        calibration.threshold.value if calibration else None,
        calibration.heatmap_vmax if calibration else None,
    )


def predict(
    run_dir: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    skip_bad: bool = False,
    panels: bool = True,
    vmax: float | None = None,
) -> list[dict]:
    """Score `inputs` with a run (or a model exported to ONNX); one dict per image.

    Writes predictions.csv and panels/<name>.png under `out_dir`.
    """
    out_dir = check_output(out_dir, kind="predict")
    model = open_model(run_dir, device)
    dataset = "" if model.dataset == "synthetic" else model.dataset
    check_output_folder(out_dir, dataset, [Path(p) for p in inputs])
    threshold = model.threshold
    files, arrays, skipped = [], [], []
    for path in expand_inputs(inputs):
        try:
            arrays.append(load_resized(path, model.image_size, model.channels))
            files.append(path)
        except DataError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
    if not files:
        raise DataError("no readable images among the inputs" + (f"; skipped: {skipped[0]}" if skipped else ""))
    result = model.score(torch.from_numpy(np.stack(arrays)))
    if vmax is None:
        # Without a calibration (a run still training) the colour scale comes from these images' own maps.
        vmax = model.heatmap_vmax or float(np.quantile(result.maps, HEATMAP_QUANTILE))
    names = panel_names(files)
    if (out_dir / PREDICTIONS).is_file() and (out_dir / "panels").is_dir():
        shutil.rmtree(out_dir / "panels")  # an earlier predict output's panels, never left beside the new CSV
    atomic_write_text(
        out_dir / PREDICTIONS,
        scores_csv([p.name for p in files], [str(p) for p in files], None, result.scores, threshold),
    )
    rows = []
    for i, path in enumerate(files):
        score = float(result.scores[i])
        decision = verdict(score, threshold) if threshold is not None else None
        row = {"path": str(path), "score": score, "prediction": decision}
        if panels:
            image = to_model_range(torch.tensor(arrays[i])).numpy()
            caption = f"{path.name}  score {score:.4f}" + (
                f"  {decision} (threshold {threshold:.4f})" if decision else ""
            )
            row["panel"] = str(
                save_panel(
                    out_dir / "panels" / names[i], panel(image, result.restored[i], result.maps[i], vmax, caption)
                )
            )
        rows.append(row)
    if skipped:
        atomic_write_text(out_dir / "skipped.txt", "\n".join(skipped) + "\n")
    return rows
