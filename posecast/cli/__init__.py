"""The `posecast` command line: a thin Typer layer over the library.

Known failures (PosecastError) print one line, `error: …`, and exit 1 (2 for usage errors);
a traceback is shown only with `--debug` or POSECAST_DEBUG=1. Ctrl-C (exit 130) and SIGTERM
(exit 143) clean up as any failure does: temporary files are removed, outputs stay untouched.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from posecast.cli import (
    distill,
    evaluate,
    export,
    keypoints,
    live,
    make_dataset,
    motion,
    render,
    teacher,
    train,
    train_motion,
)
from posecast.cli.bench import bench_app
from posecast.cli.command import finish_commands
from posecast.cli.import_model import import_app
from posecast.cli.ui import NORMAL, set_verbosity, warn
from posecast.errors import PosecastError, Terminated
from posecast.version import __version__

app = typer.Typer(
    name="posecast", no_args_is_help=True, pretty_exceptions_enable=False,
    help="Turn one portrait and a speech recording into a talking, gesturing video.",
    context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode="rich")
app.command(name="keypoints")(keypoints.keypoints_command)
app.command(name="train")(train.train_command)
app.command(name="teacher")(teacher.teacher_command)
app.command(name="distill")(distill.distill_command)
app.command(name="motion")(motion.motion_command)
app.command(name="render")(render.render_command)
app.command(name="live")(live.live_command)
app.command(name="train-motion")(train_motion.train_motion_command)
app.command(name="make-dataset")(make_dataset.make_dataset_command)
app.command(name="eval")(evaluate.evaluate_command)
app.command(name="export")(export.export_command)
app.command(name="upload")(export.upload_command)
app.add_typer(bench_app, name="bench")
app.add_typer(import_app, name="import")
finish_commands(app)  # after every registration: the sub-apps' commands too

_debug = {"on": os.environ.get("POSECAST_DEBUG", "") not in ("", "0")}


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"posecast {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors "
                                        "(or set POSECAST_DEBUG=1).")] = False,
) -> None:
    """Turn one portrait and a speech recording into a talking, gesturing video."""
    if debug:
        _debug["on"] = True


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
    raise Terminated


# old option spellings, still taken for one release (CHANGELOG), and their names now
RENAMED = {"--out": "--output", "--student-steps": "--steps"}


def current_spelling(args: list[str]) -> list[str]:
    """`args` with each old option name (RENAMED; also as --name=value) in its new spelling,
    and a warning per name. An argument after `--` is a value, left alone."""
    out, seen = [], set()
    for position, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name in RENAMED and "--" not in args[:position]:
            if name not in seen:
                warn(f"warning: {name} is now {RENAMED[name]} ({name} still works in this "
                     "release)")
                seen.add(name)
            arg = RENAMED[name] + equals + value
        out.append(arg)
    return out


def main() -> None:
    try:  # typer vendors click (0.2x); older typers use click itself
        from typer._click.exceptions import UsageError as ParseError
    except ImportError:
        from click.exceptions import UsageError as ParseError

    set_verbosity(NORMAL)  # until --quiet or --verbose says otherwise (also a rerun in-process)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        # click's errors come here, not to its own printer
        code = app(args=current_spelling(sys.argv[1:]), standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C (KeyboardInterrupt) into Exit(130) and returns it
            warn("error: interrupted")
        if isinstance(code, int) and code:  # typer.Exit(code)
            sys.exit(code)
    except ParseError as error:  # an unknown option, a missing or malformed value
        command = error.ctx.command_path if error.ctx is not None else "posecast"
        warn(f"error: {error.format_message()} (see `{command} --help`)")
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C (or end of input, as click reports it)
        warn("error: interrupted")
        sys.exit(130)
    except PosecastError as error:
        if _debug["on"]:
            raise
        warn(f"error: {error}")
        sys.exit(error.exit_code)
    except Terminated:
        warn("error: terminated (SIGTERM)")
        sys.exit(143)
    finally:
        signal.signal(signal.SIGTERM, previous)
