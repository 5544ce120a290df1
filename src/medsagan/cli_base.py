"""What every `medsagan` command shares: one-line errors and exit codes, quiet libraries, options to a Config."""

import logging
import os
import sys
import tempfile
import time
import traceback

import click

from .config import PRESETS, Config, load_config, merge, parse_overrides
from .errors import MedsaganError

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
        code = code if isinstance(code, int) else 0
        rank = _torchrun_rank()
        if rank is not None:
            _leave_as_rank(rank, code)
        sys.exit(code)


# Seconds a rank other than 0 waits before it leaves on an error, so that rank 0, which says the same on the
# terminal, fails first and the launcher does not repeat the reason from the other rank's log.
RANK_FAILURE_DELAY = 2.0


def _torchrun_rank() -> int | None:
    """This process's rank when torchrun (or `train --nproc-per-node`) started it as one of several, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        return int(os.environ.get("RANK", "0"))
    return None


def _leave_as_rank(rank: int, code: int) -> None:
    """End a training process without the interpreter's finalisation.

    The run is written and the process group left by then; what finalisation would add is only a hazard: a
    C++ thread of torch's that takes the GIL while Python shuts down aborts the process now and then
    ("terminate called without an active exception"), turning a finished run into a failed command.
    """
    if code and rank:
        time.sleep(RANK_FAILURE_DELAY)
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


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
    """One line, with control characters (ESC, BEL, ... in a file name) shown as escapes, never sent raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in " ".join(text.split()))


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
