"""`predict`: score any files, folders or DICOMs with a trained run; a CSV and one heatmap panel per image."""

import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from .data.dataset import to_model_range
from .data.readers import SUFFIXES, is_dicom
from .errors import DataError
from .evaluate.localisation import top_region
from .evaluate.results import scores_csv
from .files import atomic_write_text, check_output
from .inference import Detector
from .records import separation_warning
from .viz.heatmaps import panel, save_panel

log = logging.getLogger(__name__)

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


def predict(
    run_dir: str | Path,
    inputs: list[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    skip_bad: bool = False,
    panels: bool = True,
    vmax: float | None = None,
    smooth: float = 0.0,
) -> list[dict]:
    """Score `inputs` with a run (or a model exported to ONNX); one dict per image.

    Writes predictions.csv and panels/<name>.png under `out_dir`.
    """
    out_dir = check_output(out_dir, kind="predict")
    model = Detector.open(run_dir, device)
    warning = separation_warning(model.calibration)
    if warning:
        log.warning(warning)
    dataset = "" if model.dataset == "synthetic" else model.dataset
    check_output_folder(out_dir, dataset, [Path(p) for p in inputs])
    threshold = model.threshold
    files, arrays, skipped = [], [], []
    for path in expand_inputs(inputs):
        try:
            arrays.append(model.read(path))
            files.append(path)
        except DataError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
    if not files:
        raise DataError("no readable images among the inputs" + (f"; skipped: {skipped[0]}" if skipped else ""))
    result = model.score(torch.from_numpy(np.stack(arrays)))
    if vmax is None:
        vmax = model.heatmap_scale(result)
    names = panel_names(files)
    where = [top_region(amap) for amap in result.maps]
    if (out_dir / PREDICTIONS).is_file() and (out_dir / "panels").is_dir():
        shutil.rmtree(out_dir / "panels")  # an earlier predict output's panels, never left beside the new CSV
    atomic_write_text(
        out_dir / PREDICTIONS,
        scores_csv([p.name for p in files], [str(p) for p in files], None, result.scores, threshold, where),
    )
    rows = []
    for i, path in enumerate(files):
        score = float(result.scores[i])
        decision = model.decide(score)
        row = {"path": str(path), "score": score, "prediction": decision, "where": where[i]}
        if panels:
            image = to_model_range(torch.tensor(arrays[i])).numpy()
            caption = f"{path.name}  score {score:.4f}" + (
                f"  {decision} (threshold {threshold:.4f})" if decision else ""
            )
            row["panel"] = str(
                save_panel(
                    out_dir / "panels" / names[i],
                    panel(image, result.restored[i], result.maps[i], vmax, caption, smooth, model.map_name),
                )
            )
        rows.append(row)
    if skipped:
        atomic_write_text(out_dir / "skipped.txt", "\n".join(skipped) + "\n")
    return rows
