"""`posecast render`: speech and a portrait in, a lip-synced MP4 out (one job or a batch)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.devices import parse_size, pick_device
from posecast.cli.options import Device, Overwrite, Seed, revision_option
from posecast.cli.ui import console, err_console, progress_bar
from posecast.errors import PosecastError, UsageError
from posecast.paths import require_output

BATCH_COLUMNS = ("audio", "portrait", "output")
OPTIONAL_COLUMNS = ("seed", "model")


def default_model() -> str:
    from posecast.assets import starter_model

    return str(starter_model())


@dataclass(frozen=True)
class Job:
    index: int  # row number in the CSV, from 1
    audio: Path
    portrait: Path
    output: Path
    seed: int | None
    model: str | None


def read_jobs(path: Path) -> list[Job]:
    """Rows of a jobs CSV; relative paths are taken from the CSV's own folder."""
    if not path.is_file():
        raise UsageError(f"{path}: no such jobs file")
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
            columns = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path}: not a readable CSV file ({error})") from None
    missing = [column for column in BATCH_COLUMNS if column not in columns]
    if not rows:
        raise UsageError(f"{path}: no jobs (a header line audio,portrait,output then one row "
                         "per video)")
    if missing:
        raise UsageError(f"{path}: missing column(s) {', '.join(missing)}; the columns are "
                         f"{', '.join(BATCH_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}")
    base = path.parent
    jobs = []
    for index, row in enumerate(rows, start=1):
        seed = (row.get("seed") or "").strip()
        try:
            seed_value = int(seed) if seed else None
        except ValueError:
            raise UsageError(f"{path}: row {index}: seed '{seed}' is not a whole number"
                             ) from None
        jobs.append(Job(index, base / row["audio"].strip(), base / row["portrait"].strip(),
                        base / row["output"].strip(), seed_value,
                        (row.get("model") or "").strip() or None))
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 ≤ i < n."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text}: write it as I/N, e.g. 0/4 (I from 0 to N-1)") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text}: I must be between 0 and N-1")
    return index, count


def render_command(
    audio: Annotated[Path | None, typer.Argument(help="Speech (WAV, FLAC, MP3, M4A, … or a "
                                                 "video's audio track).", show_default=False)]
    = None,
    portrait: Annotated[Path | None, typer.Argument(help="The person (PNG, JPEG, WebP), face "
                                                    "and shoulders visible.",
                                                    show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="The MP4 to write "
                                                "(default: AUDIO_PORTRAIT.mp4, from the inputs' "
                                                "names, in the current folder).",
                                                show_default=False)] = None,
    model: Annotated[str | None, typer.Option(
        help="A distilled student: model folder or Hub repo id \\[default: the bundled starter "
        "model].", show_default=False, envvar="POSECAST_MODEL")] = None,
    revision: revision_option("--model") = None,
    motion: Annotated[str, typer.Option(
        help="Motion from speech: 'procedural' (built in, no weights) or a model folder / repo "
        "id trained with `posecast train-motion`.")] = "procedural",
    poses: Annotated[Path | None, typer.Option(
        help="Follow this keypoint file (.npz) instead of motion from the speech.")] = None,
    steps: Annotated[int | None, typer.Option(
        help="Student steps (default: the model's, which it was trained for).", min=1,
        max=8)] = None,
    fps: Annotated[float, typer.Option(help="Output frame rate.", min=1.0, max=120.0)] = 25.0,
    size: Annotated[str | None, typer.Option(
        help="Output WxH (default: the model's native size).")] = None,
    seed: Seed = 0,
    batch: Annotated[Path | None, typer.Option(
        help="A CSV of jobs (columns audio, portrait, output; optional seed, model; paths "
        "relative to the CSV). The model loads once; failed jobs are reported, the rest go on.",
        show_default=False)] = None,
    shard: Annotated[str | None, typer.Option(
        help="With --batch: take jobs I, I+N, I+2N, … (I from 0), e.g. $SLURM_ARRAY_TASK_ID/8.",
        show_default=False)] = None,
    json_summary: Annotated[bool, typer.Option(
        "--json", help="Print a JSON summary on stdout (messages go to stderr).")] = False,
    warn_minutes: Annotated[float, typer.Option(
        help="Warn (then render anyway) when the audio is longer than this.", min=0.0)] = 10.0,
    compile: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="Compile the student's chunk step (CUDA graphs on CUDA; "
        "the warm-up before the first frame pays for it). Default: on CUDA only.",
        show_default=False)] = None,
    device: Device = "auto",
    overwrite: Overwrite = False,
) -> None:
    """Render PORTRAIT speaking AUDIO: lips, head, blinks and hand beats follow the speech.

    The portrait is cropped to the model's frame with the face and upper body centred (the
    face's centre about 38 % down, about 3 face heights tall). The video lasts exactly as long
    as the audio, which is muxed in.

    [bold]Examples[/bold]

      posecast render speech.wav portrait.png                 (writes speech_portrait.mp4)

      posecast render speech.wav portrait.png -o talk.mp4

      posecast render --batch jobs.csv --shard 0/4 --json
    """
    from posecast.models.pretrained import load_config
    from posecast.motion import load_motion
    from posecast.render import Renderer

    if batch is None:
        if audio is None or portrait is None:
            raise UsageError("give AUDIO PORTRAIT [-o OUT.mp4], or --batch jobs.csv")
        if output is None:  # named from its inputs, in the current folder
            output = Path(f"{Path(audio).stem}_{Path(portrait).stem}.mp4")
        jobs = [Job(1, audio, portrait, output, None, None)]
    else:
        if audio is not None or portrait is not None or output is not None:
            raise UsageError("--batch takes its jobs from the CSV; drop AUDIO, PORTRAIT and -o")
        jobs = read_jobs(batch)
        if shard is not None:
            index, count = parse_shard(shard)
            jobs = jobs[index::count]
    if shard is not None and batch is None:
        raise UsageError("--shard needs --batch")
    if revision is not None and model is None:
        raise UsageError("--revision needs --model OWNER/NAME (the Hub repo it picks from)")
    if batch is None:
        require_output(output, overwrite, (".mp4",))
    torch_device = pick_device(device)
    motion_model = load_motion(motion, str(torch_device))
    say = err_console if json_summary else console
    renderers: dict[str, Renderer] = {}

    def renderer_for(source: str) -> Renderer:
        if source not in renderers:
            source_revision = revision if source == model else None  # a CSV row names its own
            shape = None
            if size is not None:
                config = load_config(source, source_revision)
                shape = parse_size(size, config.codec.downsample * config.patch_size)
            renderers[source] = Renderer(source, torch_device, size=shape, steps=steps,
                                         compile=compile,
                                         on_warning=lambda text: say.print(text,
                                                                           highlight=False),
                                         revision=source_revision)
        return renderers[source]

    results = []
    for job in jobs:
        try:
            if batch is not None:
                require_output(job.output, overwrite, (".mp4",))
            renderer = renderer_for(job.model or model or default_model())
            result = _render_one(renderer, job, motion_model, poses, fps,
                                 job.seed if job.seed is not None else seed, warn_minutes)
        except PosecastError as error:
            if batch is None:
                raise
            err_console.print(f"error: job {job.index} ({job.output}): {error}", markup=False,
                              highlight=False, soft_wrap=True)
            results.append({"job": job.index, "output": str(job.output), "status": "failed",
                            "error": str(error)})
            continue
        config = renderer.config
        say.print(f"wrote {result.output}: {result.seconds:.2f} s of video ({result.frames} "
                  f"frames, {config.width}x{config.height}, {len(renderer.timesteps) - 1} "
                  f"steps) in {result.elapsed:.2f} s = {result.realtime_factor:.2f}x real time "
                  f"(first frame after {result.first_frame:.2f} s; once started, "
                  f"{result.frames / result.streaming:.1f} FPS = "
                  f"{result.streaming_factor:.2f}x real time)", highlight=False,
                  soft_wrap=True)
        results.append({"job": job.index, "output": str(result.output), "status": "ok",
                        "seconds": round(result.seconds, 3), "frames": result.frames,
                        "elapsed": round(result.elapsed, 3),
                        "realtime_factor": round(result.realtime_factor, 3),
                        "streaming_factor": round(result.streaming_factor, 3)})
    failed = sum(result["status"] == "failed" for result in results)
    if json_summary:
        typer.echo(json.dumps({"jobs": results, "ok": len(results) - failed,
                               "failed": failed}, indent=2))
    if batch is not None:
        say.print(f"{len(results) - failed} of {len(results)} jobs done"
                  + (f", {failed} failed" if failed else ""), highlight=False)
    if failed:
        raise typer.Exit(1)


def _render_one(renderer, job: Job, motion_model, poses, fps: float, seed: int,
                warn_minutes: float):
    with progress_bar("s of video") as bar:
        task = bar.add_task(f"rendering {job.output.name}", total=None)
        return renderer.render(
            job.audio, job.portrait, job.output, motion=motion_model, poses=poses, fps=fps,
            seed=seed,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            on_warning=lambda text: err_console.print(text, markup=False, highlight=False),
            warn_seconds=warn_minutes * 60)
