"""A finished run's copy with other map settings, its map reference and calibration refitted, nothing retrained.

    python benchmarks/remap.py RUN OUT [model.map_sigma=2 model.map_reference=normals]

Copies RUN's files and its last checkpoint into OUT (a new folder), sets the given model.map_* keys in the
copy's config.yaml (default: the `fast` preset's), and resumes the copy: the run is finished, so the resume
only refits the reference map and the calibration for its chosen weights. The scores stay the run's; its
maps, heatmap scale and localisation figures become those of the new settings. RUN is never written.
"""

import argparse
import shutil
from pathlib import Path

from medsagan import fit
from medsagan.config import load_config, merge, parse_overrides
from medsagan.runs import RunDir

DEFAULTS = ["model.map_sigma=2", "model.map_reference=normals"]


def remap(run_dir: str, out: str, overrides: list[str]) -> Path:
    """OUT: RUN's copy with the map settings `overrides` ("model.map_*=VALUE"), refitted."""
    changes = parse_overrides(overrides)
    if set(changes) != {"model"} or not all(key.startswith("map_") for key in changes["model"]):
        raise SystemExit(f"only model.map_* keys can change without retraining, not {' '.join(overrides)}")
    source, target = RunDir(run_dir), Path(out)
    if target.exists():
        raise SystemExit(f"{target} exists; give a new folder")
    states = sorted(source.checkpoints.glob("state-*.pt"))
    if not states or not source.best.is_file():
        raise SystemExit(f"{run_dir}: not a finished run (no checkpoint or no best.pt)")
    (target / "checkpoints").mkdir(parents=True)
    for item in source.path.iterdir():
        if item.is_file():
            shutil.copy2(item, target / item.name)
    shutil.copy2(states[-1], target / "checkpoints" / states[-1].name)
    # Every key of the saved run, then the changes, through the typed loader: no preset default slips in.
    cfg = load_config(overrides=merge(RunDir(target).load_config().to_dict(), changes))
    cfg.save(RunDir(target).config)
    fit(cfg, target, resume=True, progress=False)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("out")
    parser.add_argument("overrides", nargs="*", default=DEFAULTS)
    args = parser.parse_args()
    print(remap(args.run, args.out, args.overrides or DEFAULTS))


if __name__ == "__main__":
    main()
