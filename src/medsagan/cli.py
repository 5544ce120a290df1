"""The `medsagan` command line: train, evaluate, predict, demo, model-info, data check, data prepare."""

import json
import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path

import click

from .config import PRESETS, Config, choices, load_config, merge, parse_overrides
from .errors import ConfigError, MedsaganError

PRESET_NAMES = tuple(PRESETS)


class Command(click.Group):
    """Every failure is one line on stderr, never a traceback.

    The tool's own errors and usage mistakes exit 2 with what to fix; Ctrl-C exits 130; anything unexpected
    exits 1 with the command, the error and the file holding the full traceback (for a bug report).
    """

    def main(self, args=None, prog_name=None, **extra):
        """Run the command line; exit with 0, 1 (a bug), 2 (a usage or input error) or 130."""
        argv = list(sys.argv[1:] if args is None else args)
        try:
            extra.setdefault("obj", {"argv": argv})
            code = super().main(args=argv, prog_name=prog_name, standalone_mode=False, **extra)
        except MedsaganError as err:
            code = _fail(f"error: {_one_line(str(err))}", 2)
        except click.UsageError as err:
            hint = f" (see `{err.ctx.command_path} --help`)" if err.ctx else ""
            code = _fail(f"error: {_one_line(err.format_message())}{hint}", 2)
        except click.ClickException as err:
            code = _fail(f"error: {_one_line(err.format_message())}", err.exit_code)
        except (click.Abort, KeyboardInterrupt):
            code = _fail(_interrupted(argv), 130)
        except Exception as err:
            report = _write_traceback(argv)
            code = _fail(
                f"error: `{_command_name(argv)}` failed unexpectedly: {type(err).__name__}: "
                f"{_one_line(str(err))} (full traceback in {report}; please attach it to a bug report)",
                1,
            )
        sys.exit(code if isinstance(code, int) else 0)


def _command_name(argv: list[str]) -> str:
    words = [arg for arg in argv if not arg.startswith("-")]
    return " ".join(["medsagan", *words[: 2 if words[:1] == ["data"] else 1]])


def _interrupted(argv: list[str]) -> str:
    """What an interrupted command leaves, and how to go on, by command."""
    command = _command_name(argv)
    if command == "medsagan train":
        return "interrupted; the run continues from its last checkpoint with `medsagan train --resume RUN`"
    if command == "medsagan demo":
        return "interrupted; run `medsagan demo` again with the same --out to continue its training"
    return f"interrupted; `{command}` wrote every file atomically, so nothing is half-written: run it again"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _positive_finite(param, value):
    """A click callback: None, or a finite number above zero."""
    import math

    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a positive finite number", param=param)
    return value


def _fail(message: str, code: int) -> int:
    click.echo(message, err=True)
    return code


def _write_traceback(argv: list[str]) -> str:
    handle, path = tempfile.mkstemp(prefix="medsagan-error-", suffix=".log")
    with os.fdopen(handle, "w") as log_file:
        log_file.write(f"medsagan {' '.join(argv)}\nmedsagan {_version()}, Python {sys.version.split()[0]}\n\n")
        log_file.write(traceback.format_exc())
    return path


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medsagan")
    except PackageNotFoundError:
        return "(not installed)"


@click.group(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="medsagan")
@click.option("--verbose", is_flag=True, help="Also show the libraries' own log lines and warnings (torch, ONNX).")
def main(verbose):
    """SAGAN anomaly detection for medical images: restore an image to a healthy one and score the difference.

    Start with `medsagan demo`; see `medsagan COMMAND --help` for each command.
    """
    quiet_libraries(verbose)


def quiet_libraries(verbose: bool) -> None:
    """Medsagan's own lines on stderr; the libraries' log lines and warnings only with --verbose."""
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OwnLines) for f in handler.filters):
            handler.addFilter(OwnLines())
    for name in ("torch", "onnxscript", "onnx", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


class OwnLines(logging.Filter):
    """Passes medsagan's records, and other libraries' errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        """True for a record the user should see without --verbose."""
        return record.name.startswith("medsagan") or record.levelno >= logging.ERROR


def options(**sections: dict) -> dict:
    """Nested overrides from command-line options, the ones not given (None) left out."""
    nested = {name: {k: v for k, v in values.items() if v is not None} for name, values in sections.items()}
    return {name: values for name, values in nested.items() if values}


def command_config(config_file: str | None, preset: str | None, overrides: tuple[str, ...], given: dict) -> Config:
    """The one path from a command line to a Config: file, preset, KEY=VALUE overrides, then the options."""
    return load_config(config_file, merge(parse_overrides(overrides), given), preset)


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML configuration file.")
@click.option("--preset", type=click.Choice(PRESET_NAMES), help="Starting point (default paper).")
@click.option("--data", help="Dataset: Med-AD folder, folder layout, MedMNIST .npz, or 'synthetic'.")
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
            from .train import plan_time_budget

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
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(run, split, official_scoring, device, drop_duplicates, data, as_json):
    """Score a run's test split: AUC, AP, metrics.json, scores.csv and curves.png in RUN/evaluation/SPLIT.

    \b
    medsagan evaluate runs/pneumonia --json
    """
    from .api import evaluate_run

    result = evaluate_run(
        run, split, official=official_scoring, device=device, drop_duplicates=drop_duplicates, data=data
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
def predict(run, paths, out, device, skip_bad, no_panels, vmax):
    """Score images, folders or DICOMs; write predictions.csv and a heatmap panel per image.

    RUN is a run directory, or an ONNX file written by `medsagan export`.

    \b
    medsagan predict runs/pneumonia scans/ chest.png --out predictions/
    medsagan predict pneumonia.onnx scans/ --out predictions/
    """
    from .predict import predict as run_predict

    rows = run_predict(run, list(paths), out, device, skip_bad, not no_panels, vmax)
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


@main.command("model-info")
@click.option("--config", "config_file", type=click.Path(dir_okay=False))
@click.option("--preset", type=click.Choice(PRESET_NAMES))
@click.option("--json", "as_json", is_flag=True)
@click.argument("overrides", nargs=-1)
def model_info(config_file, preset, as_json, overrides):
    """Parameter counts, shapes and multiply-adds of the generator and critic.

    \b
    medsagan model-info --preset paper --json
    medsagan model-info --preset fast model.acm=false
    """
    from .models.summary import describe

    info = describe(command_config(config_file, preset, overrides, {}).model)
    if as_json:
        click.echo(json.dumps(info))
        return
    for key, value in info.items():
        click.echo(f"{key:<28}{value}")


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


@main.command("import-official")
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to create.")
@click.option("--data", default="", help="Dataset the run evaluates on (optional; set it to use `evaluate`).")
@click.option("--image-size", default=64, show_default=True, help="Side the checkpoint was trained at.")
def import_official_command(checkpoint, out, data, image_size):
    """Turn a generator checkpoint of the official code (zzr728/SAGAN) into a medsagan run.

    \b
    medsagan import-official SAGAN_G_rsna.ckpt --out runs/official-rsna --data data/RSNA
    medsagan evaluate runs/official-rsna
    """
    from .official import import_official

    if data and data != "synthetic" and not Path(data).expanduser().exists():
        raise ConfigError(f"--data {data} does not exist; give the dataset's folder or file, or leave --data out")
    run = import_official(checkpoint, out, data, image_size)
    click.echo(f"imported: {run}\nnext: medsagan predict {run} IMAGES... --out predictions/")


@main.group()
def data():
    """Inspect datasets and convert public downloads to the Med-AD layout."""


@data.command("check")
@click.argument("path")
@click.option("--source", type=click.Choice(choices("data.source")), default="auto")
@click.option("--medmnist-task", type=click.Choice(choices("data.medmnist_task")), default="")
@click.option("--skip-bad", is_flag=True, help="Report unreadable images instead of stopping at the first.")
@click.option("--json", "as_json", is_flag=True)
@click.argument("overrides", nargs=-1)
def data_check(path, source, medmnist_task, skip_bad, as_json, overrides):
    """Counts per split, the unlabelled set the protocol builds, image sizes, and any problem.

    \b
    medsagan data check ../shared/data/medad-pneumonia64
    medsagan data check my-data/ data.anomaly_ratio=0.4 --json
    """
    from .data.check import format_report, inspect
    from .data.sources import open_source

    if source == "synthetic" and path != "synthetic":
        raise ConfigError(f"--source synthetic reads no files, so {path} would be ignored; run `data check synthetic`")
    given = options(
        data={"path": path, "source": source, "medmnist_task": medmnist_task or None, "skip_bad": skip_bad or None}
    )
    cfg = command_config(None, None, overrides, given)
    report = inspect(open_source(cfg), cfg.data)
    click.echo(json.dumps(report) if as_json else format_report(report))


@data.command("prepare")
@click.argument("dataset", type=click.Choice(["rsna", "vindr", "lag"]))
@click.argument("raw", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Med-AD folder to write.")
@click.option(
    "--split",
    "split_file",
    metavar="NAME|FILE",
    help="The benchmark's split: rsna, vindr or lag (shipped with medsagan), or a data.json path.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the split when no --split is given.")
@click.option("--size", default=512, show_default=True, help="Side of the converted chest X-ray PNGs.")
def data_prepare(dataset, raw, out, split_file, seed, size):
    """Convert RSNA, VinDr-CXR or LAG downloads into the Med-AD layout with the benchmark's recipe.

    \b
    medsagan data prepare rsna ~/kaggle/rsna --out data/RSNA --split rsna
    medsagan data prepare lag ~/LAG --out data/LAG --split lag
    """
    from .data.prepare import prepare

    counts = prepare(dataset, raw, out, split_file, seed, size)
    click.echo(json.dumps({"out": out, "counts": counts}))


if __name__ == "__main__":
    main()
