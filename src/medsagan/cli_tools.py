"""The `medsagan` commands around training: benchmark, model-info, import-official, data check and prepare."""

import json
from pathlib import Path

import click

from .cli_base import PRESET_NAMES, command_config, options
from .config import Config, choices
from .errors import ConfigError, RunError


@click.command()
@click.option("--data", required=True, help="The dataset every run trains and is tested on.")
@click.option("--grid", "grid_file", required=True, type=click.Path(dir_okay=False), help="Rows: a YAML file.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the runs and results.")
@click.option("--seeds", help="Seeds of every row, such as 0,1,2 (default: the grid's, else 0,1,2).")
@click.option("--rows", "only", help="Only these rows of the grid, such as sagan,baseline (default: all).")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--jobs",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Runs trained at once, each process with an equal share of the CPU threads (and on several GPUs, "
    "the next GPU); jobs beyond the first log to OUT/jobK.log.",
)
@click.option("--drop-duplicates", is_flag=True, help="Leave out test images that copy a training image.")
@click.option("--dry-run", is_flag=True, help="Check the grid and print its rows; train nothing.")
@click.option("--tabulate", is_flag=True, help="Write the table of the runs finished so far; train and test nothing.")
@click.option(
    "--progress/--no-progress", default=None, help="A progress bar per run (default: when stderr is a terminal)."
)
def benchmark(data, grid_file, out, seeds, only, device, jobs, drop_duplicates, dry_run, tabulate, progress):
    """Train every row of a grid over several seeds, test each run once, and tabulate them.

    Each (row, seed) is an ordinary run under OUT/ROW/seedN. Run it again to resume: finished runs are
    read back, interrupted ones resumed. Writes OUT/results.md, .csv, .json and .png. Several processes
    on one OUT share its runs: each run goes to the first to claim it. --jobs N starts them for you.

    \b
    medsagan benchmark --data ../shared/data/medad-pneumonia64 --grid configs/benchmarks/table3.yaml \\
        --out runs/table3
    medsagan benchmark --data my-medad-folder --grid my-grid.yaml --seeds 0,1 --out runs/mine --dry-run
    medsagan benchmark --data my-medad-folder --grid my-grid.yaml --rows sagan --out runs/mine
    medsagan benchmark --data my-medad-folder --grid my-grid.yaml --out runs/mine --jobs 4 --device cuda
    medsagan benchmark --data my-medad-folder --grid my-grid.yaml --out runs/mine --tabulate
    """
    from .benchmark import Benchmark
    from .grids import grid_yaml, parse_seeds, read_grid
    from .jobs import Workers, job_devices

    rows = tuple(name.strip() for name in only.split(",") if name.strip()) if only else ()
    grid = read_grid(grid_file, parse_seeds(seeds, "--seeds") if seeds else None, rows)
    path = Config().replace(data={"path": data}).with_absolute_paths().data.path
    bench = Benchmark(Path(out), grid, path)
    if dry_run:
        planned = bench.check()
        click.echo(grid_yaml(grid), nl=False)
        click.echo(f"{len(planned)} runs ({len(grid.rows)} rows x {len(grid.seeds)} seeds) would write to {out}")
        return
    if tabulate:
        bench.check()
        runs = bench.summarise()
        click.echo(
            f"{len(runs)} of {len(grid.rows) * len(grid.seeds)} runs finished; table in {Path(out) / 'results.md'}"
        )
        return
    if progress is None:
        progress = click.get_text_stream("stderr").isatty()
    shared = ["--data", data, "--grid", grid_file, "--out", out, *(["--seeds", seeds] if seeds else [])]
    shared += [*(["--rows", only] if only else []), *(["--drop-duplicates"] if drop_duplicates else [])]
    devices = job_devices(device, jobs)
    planned = bench.prepare()  # the other jobs find OUT marked as this benchmark's
    with Workers(shared, jobs, Path(out), devices) as workers:
        left = bench.run(devices[0], drop_duplicates, click.echo, progress, planned)
        if left and jobs > 1:
            click.echo(f"{left} of {len(planned)} runs left to the other jobs; waiting for them")
        elif left:
            click.echo(
                f"{left} of {len(planned)} runs left to other processes; run this again after them for the whole table"
            )
        failed = workers.failed()
    runs = bench.summarise()
    if failed:
        names = ", ".join(str(log) for log in failed)
        raise RunError(
            f"{len(failed)} of the other jobs stopped with an error (see {names}); run the same command again to resume"
        )
    click.echo(f"{len(runs)} run{'' if len(runs) == 1 else 's'} finished; results in {Path(out) / 'results.md'}")


@click.command("model-info")
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


@click.command("import-official")
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


@click.group()
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
