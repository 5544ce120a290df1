"""The `medsagan` command line: train, evaluate, predict, demo, report, serve, export, and the tools in cli_tools."""

import json
from pathlib import Path

import click

from .cli_base import PRESET_NAMES, Command, _positive_finite, command_config, options, quiet_libraries
from .cli_tools import benchmark, data, import_official_command, model_info
from .config import merge, parse_overrides
from .errors import ConfigError


@click.group(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="medsagan")
@click.option("--verbose", is_flag=True, help="Also show the libraries' own log lines and warnings (torch, ONNX).")
def main(verbose):
    """SAGAN anomaly detection for medical images: restore an image to a healthy one and score the difference.

    Start with `medsagan demo`; see `medsagan COMMAND --help` for each command.
    """
    quiet_libraries(verbose)


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML configuration file.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), help="Starting point (default paper).")
@click.option(
    "--data",
    help="Dataset: Med-AD folder, folder layout, class folders (train/normal/, ...), MedMNIST .npz, or 'synthetic'.",
)
@click.option("--iterations", type=int, help="Critic iterations (paper: 100000).")
@click.option("--device", help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--seed", type=int, help="Seed of every random stream.")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--resume", type=click.Path(file_okay=False, exists=True), help="Continue the run in this directory.")
@click.option("--skip-bad", is_flag=True, default=None, help="Skip unreadable images and list them in RUN/data.json.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the resolved configuration and data summary (and what train.time_budget would choose), then exit.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs still go to RUN/log.jsonl).")
@click.option(
    "--nproc-per-node",
    "processes",
    type=click.IntRange(min=1),
    help="Train as this many processes on this machine (as torchrun --standalone), one per GPU.",
)
@click.argument("overrides", nargs=-1)
def train(
    config_file,
    preset,
    data,
    iterations,
    device,
    seed,
    out,
    resume,
    skip_bad,
    dry_run,
    no_progress,
    processes,
    overrides,
):
    """Train SAGAN and write a run directory.

    OVERRIDES are KEY=VALUE settings of the configuration (configs/paper.yaml lists every key).

    \b
    medsagan train --data ../shared/data/medad-pneumonia64 --preset fast --out runs/pneumonia
    medsagan train --config configs/medad-rsna.yaml --out runs/rsna train.batch_size=64
    medsagan train --resume runs/pneumonia            # after an interruption
    """
    from .distributed import launch, world_from_env
    from .runs import RunDir
    from .train import fit

    if processes and not dry_run:
        argv = click.get_current_context().obj["argv"]
        at = next(i for i, a in enumerate(argv) if a.startswith("--nproc-per-node"))
        launch(processes, argv[:at] + argv[at + (1 if "=" in argv[at] else 2) :])
        return
    if resume:
        given = {"--out": out, "--config": config_file, "--preset": preset, "--data": data}
        given.update({"--seed": seed is not None, "--skip-bad": skip_bad})
        clashing = [name for name, value in given.items() if value]
        if clashing:
            raise ConfigError(
                f"--resume continues {resume} in place with its saved configuration, so {clashing[0]} cannot be "
                "given with it; only --iterations, --device and train.* overrides may change"
            )
        extra = parse_overrides(overrides)
        if set(extra) - {"train"}:
            raise ConfigError(
                f"with --resume only train.* overrides are accepted, not {', '.join(sorted(set(extra) - {'train'}))}.*"
            )
        changes = merge(extra, options(train={"iterations": iterations, "device": device})).get("train", {})
        cfg = RunDir(resume).resumed_config(changes)
        if dry_run:
            click.echo(json.dumps(cfg.to_dict(), indent=1))
            return
        fit(cfg, Path(resume), resume=True, progress=not no_progress)
        if world_from_env().is_main:
            click.echo(f"run resumed and finished: {resume}")
        return
    given = options(
        data={"path": data, "skip_bad": skip_bad}, train={"iterations": iterations, "device": device, "seed": seed}
    )
    cfg = command_config(config_file, preset, overrides, given)
    if dry_run:
        from .data.check import format_report, inspect
        from .data.sources import open_source

        click.echo(json.dumps(cfg.to_dict(), indent=1))
        click.echo(format_report(inspect(open_source(cfg), cfg.data)))
        if cfg.train.time_budget:
            from .runs import RunDir
            from .time_budget import plan_time_budget

            cache = RunDir(out).cache_dir(cfg) if out else Path(cfg.data.cache_dir or ".medsagan-cache")
            click.echo(plan_time_budget(cfg, cache).describe())
        return
    if not out:
        raise click.UsageError("--out RUN is required: the directory the run is written to")
    fit(cfg, Path(out), progress=not no_progress)
    if world_from_env().is_main:
        click.echo(f"run finished: {out}\nnext: medsagan evaluate {out}")


@main.command()
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option(
    "--official-scoring",
    is_flag=True,
    help="Score as the official code did (training mode, random mask); for comparison only.",
)
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--drop-duplicates",
    is_flag=True,
    help="Leave out images byte-identical to a training image (listed in metrics.json) instead of refusing.",
)
@click.option("--data", help="Where the run's dataset lives now, if it has moved since training.")
@click.option("--masks", type=click.Path(file_okay=False), help="Lesion masks named like the test images.")
@click.option("--boxes", type=click.Path(dir_okay=False), help="Lesion boxes: a published box file.")
@click.option("--boxes-format", type=click.Choice(["nih", "rsna", "vindr"]), help="The box file's format.")
@click.option("--original-sizes", type=click.Path(dir_okay=False), help="VinDr-CXR: image_id,width,height.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(
    run, split, official_scoring, device, drop_duplicates, data, masks, boxes, boxes_format, original_sizes, as_json
):
    """Score a run's test split: AUC, AP, metrics.json, scores.csv and curves.png in RUN/evaluation/SPLIT.

    With lesion ground truth (--masks, or --boxes and --boxes-format), or on the built-in synthetic data,
    also how well the anomaly maps point at the lesions: pixel AUROC, AUPRO, pointing game, Dice and IoU.

    \b
    medsagan evaluate runs/pneumonia --json
    medsagan evaluate runs/nih --boxes BBox_List_2017.csv --boxes-format nih
    """
    from .api import evaluate_run
    from .evaluate.ground_truth import GroundTruth

    truth = None
    if masks or boxes or boxes_format or original_sizes:
        paths = {"masks": masks, "boxes": boxes, "original_sizes": original_sizes}
        truth = GroundTruth(**{k: Path(v) if v else None for k, v in paths.items()}, boxes_format=boxes_format or "")
    result = evaluate_run(
        run, split, official_scoring, device, drop_duplicates=drop_duplicates, data=data, ground_truth=truth
    )
    metrics = result.to_dict()
    if as_json:
        click.echo(json.dumps(metrics))
        return
    chosen = metrics["checkpoint"]
    click.echo(
        f"{split}: AUC {metrics['auc']:.4f}  AP {metrics['ap']:.4f}  "
        f"({metrics['n_normal']} normal, {metrics['n_abnormal']} abnormal)"
    )
    click.echo(f"checkpoint: iteration {chosen['iteration']}, chosen by {chosen['selection']}")
    if result.calibration is not None and result.calibration.separation is not None:
        click.echo(result.calibration.separation.sentence())
    click.echo(f"scoring: {metrics['scoring']}")
    if metrics["dropped_duplicates"]:
        click.echo(f"left out (copies of training images): {'; '.join(metrics['dropped_duplicates'])}")
    if "at_threshold" in metrics:
        t = metrics["at_threshold"]
        click.echo(
            f"at threshold {t['threshold']['value']:.5f} ({t['threshold']['rule']}, fitted on "
            f"{t['threshold']['fitted_on']}): sensitivity {t['sensitivity']:.3f}, "
            f"specificity {t['specificity']:.3f}"
        )
    if "localisation" in metrics:
        where = metrics["localisation"]
        overlap = f", Dice {where['dice']:.3f}, IoU {where['iou']:.3f}" if where["dice"] is not None else ""
        click.echo(
            f"localisation ({where['images_with_ground_truth']} abnormal images with ground truth): pixel AUROC "
            f"{where['pixel_auroc']:.3f}, AUPRO {where['aupro']:.3f}, pointing game {where['pointing_game']:.3f}"
            + overlap
        )
    click.echo(f"written: {metrics['output']}")


@main.command()
@click.argument("run", type=click.Path(exists=True))
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the CSV and panels.")
@click.option("--device", default="auto", show_default=True)
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (listed in skipped.txt).")
@click.option("--no-panels", is_flag=True, help="Only the CSV.")
@click.option(
    "--vmax",
    type=float,
    callback=lambda ctx, param, value: _positive_finite(param, value),
    help="Heatmap colour scale maximum, > 0 (default: the run's calibration).",
)
@click.option(
    "--smooth",
    type=float,
    default=0.0,
    callback=lambda ctx, param, value: _positive_finite(param, value) if value else 0.0,
    help="Draw the heatmaps blurred by a Gaussian of this sigma in pixels; scores never change.",
)
def predict(run, paths, out, device, skip_bad, no_panels, vmax, smooth):
    """Score images, folders or DICOMs; write predictions.csv and a heatmap panel per image.

    RUN is a run directory, or an ONNX file written by `medsagan export`.

    \b
    medsagan predict runs/pneumonia scans/ chest.png --out predictions/
    medsagan predict pneumonia.onnx scans/ --out predictions/
    """
    from .predict import predict as run_predict

    rows = run_predict(run, list(paths), out, device, skip_bad, not no_panels, vmax, smooth)
    if rows and all(r["prediction"] is None for r in rows):
        click.echo(
            f"{len(rows)} images scored; the run has no threshold (it is not calibrated), so no verdicts; "
            f"written to {out}"
        )
        return
    flagged = sum(r["prediction"] == "abnormal" for r in rows)
    click.echo(f"{len(rows)} images scored, {flagged} above the run's threshold; written to {out}")


@main.command()
@click.option("--data", help="Real data instead of the built-in synthetic set.")
@click.option("--out", default="medsagan-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--iterations", type=int, help="Training iterations (default: fits 10 minutes on 2 CPU cores).")
@click.option("--device", default="auto", show_default=True)
@click.option("--no-progress", is_flag=True)
@click.argument("overrides", nargs=-1)
def demo(data, out, iterations, device, no_progress, overrides):
    """Train the fast preset, evaluate it and write heatmaps: no download needed.

    OVERRIDES are KEY=VALUE settings laid over the fast preset, as for `train`.

    \b
    medsagan demo
    medsagan demo --data ../shared/data/medad-pneumonia64
    medsagan demo --data my-medad-folder data.anomaly_ratio=0.3
    """
    from .demo import run_demo

    summary = run_demo(out, data, iterations, device, progress=not no_progress, overrides=parse_overrides(overrides))
    click.echo(summary)


@main.command()
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="HTML file (default RUN/report-SPLIT.html).")
@click.option("--device", default="auto", show_default=True)
def report(run, split, out, device):
    """Write one self-contained HTML report of a run.

    Curves with 95 % intervals, operating points, heatmap galleries, training curves, the configuration
    and the data, in one file that opens from disk.

    \b
    medsagan report runs/pneumonia
    medsagan report runs/pneumonia --out pneumonia.html
    """
    from .viz.report import build_report

    click.echo(f"written: {build_report(run, split, out, device)}")


@main.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (this machine only).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port, 1-65535.")
@click.option("--allow-remote", is_flag=True, help="Allow a --host that other machines can reach.")
@click.option("--device", default="auto", show_default=True)
def serve(run, host, port, allow_remote, device):
    """Serve a local web app: drop images, see score, verdict and heatmap; POST /predict for scripts.

    RUN is a run directory or an exported ONNX file.

    \b
    medsagan serve runs/pneumonia              # then open http://127.0.0.1:8000
    curl -F file=@chest.png http://127.0.0.1:8000/predict
    """
    from .serve import serve as run_server

    run_server(run, host, port, allow_remote, device)


@main.command("export")
@click.argument("run", type=click.Path(file_okay=False, exists=True))
@click.option("--format", "fmt", type=click.Choice(["onnx", "safetensors"]), default="onnx", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="File to write.")
def export_command(run, fmt, out):
    """Export the run's detector to ONNX, or its generator weights to safetensors.

    ONNX: input `image`, outputs `score`, `anomaly_map`, `restored`. Both carry the config, the threshold
    and the heatmap scale as metadata.

    \b
    medsagan export runs/pneumonia --out pneumonia.onnx
    medsagan export runs/pneumonia --format safetensors --out pneumonia.safetensors
    """
    from .export import export

    written = export(run, fmt, out)
    click.echo(f"written: {written}")


for command in (benchmark, model_info, import_official_command, data):
    main.add_command(command)


if __name__ == "__main__":
    main()
