"""`posecast render`: speech and a portrait in, a lip-synced MP4 out (one job or a batch)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated

import typer

from posecast.assets import starter_model
from posecast.cli.options import (
    MAX_SEED,
    Device,
    JsonSummary,
    Overwrite,
    Seed,
    check_revision,
    check_seed,
    check_speech_then_portrait,
    in_panel,
    panel_option,
    revision_option,
)
from posecast.cli.ui import (
    console,
    err_console,
    print_json,
    process_seconds,
    progress_bar,
    warn,
)
from posecast.config import parse_size
from posecast.devices import pick_device
from posecast.errors import PosecastError, Terminated, UsageError
from posecast.paths import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    require_file,
    require_output,
)

BATCH_COLUMNS = ("audio", "portrait", "output")
OPTIONAL_COLUMNS = ("seed", "model")


@dataclass(frozen=True)
class Job:
    index: int  # row number in the CSV, from 1
    audio: Path | None  # None: the row leaves it out (then `problem` says so)
    portrait: Path | None
    output: Path | None
    seed: int | None
    model: str | None
    problem: str | None = None  # why the job cannot run, found before any model loads
    done: bool = False  # its output exists (a finished job): skipped unless --overwrite


def read_jobs(path: Path) -> list[Job]:
    """Rows of a jobs CSV; relative paths (models too) are taken from the CSV's own folder. A
    row that cannot run (a field left out, a bad seed) comes back with its `problem`; the CSV
    itself being unusable is an error."""
    if not path.is_file():
        raise UsageError(f"{path}: no such jobs file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # Excel's "CSV UTF-8" BOM
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
        # a short row gives None for the fields it lacks
        fields = {column: (row.get(column) or "").strip()
                  for column in BATCH_COLUMNS + OPTIONAL_COLUMNS}
        paths = {column: base / fields[column] if fields[column] else None
                 for column in BATCH_COLUMNS}
        empty = [column for column in BATCH_COLUMNS if paths[column] is None]
        problem = f"the row has no {' and no '.join(empty)}" if empty else None
        seed = None
        if fields["seed"]:
            try:
                seed = check_seed(int(fields["seed"]))
            except (ValueError, UsageError):
                problem = problem or (f"seed '{fields['seed']}' is not a whole number from 0 to "
                                      f"{MAX_SEED}")
        jobs.append(Job(index, paths["audio"], paths["portrait"], paths["output"], seed,
                        _model_from_row(fields["model"], base), problem))
    return jobs


def _model_from_row(text: str, base: Path) -> str | None:
    """A row's model: a folder relative to the CSV's folder `base`, else a Hub repo id."""
    from posecast.hub import is_repo_id

    if not text or Path(text).is_absolute():
        return text or None
    local = base / text
    return str(local) if local.exists() or not is_repo_id(text) else text


def check_jobs(jobs: list[Job], overwrite: bool) -> list[Job]:
    """The jobs, each with the first problem that shows before any model loads: an input that
    is missing, an output that another row writes too or that is some row's input. A job whose
    output exists is `done` (a rerun of a stopped or finished batch does what is left), unless
    --overwrite redoes it."""
    writers: dict[Path, list[int]] = {}  # resolved output → the rows writing it
    for job in jobs:
        if job.output is not None:
            writers.setdefault(job.output.resolve(), []).append(job.index)
    inputs = {source.resolve() for job in jobs for source in (job.audio, job.portrait)
              if source is not None}
    checked = []
    for job in jobs:
        problem, done = job.problem, False
        if problem is None:
            others = [str(index) for index in writers[job.output.resolve()] if index != job.index]
            try:
                if others:
                    raise UsageError(f"{job.output}: row(s) {', '.join(others)} write it too; "
                                     "give each job its own output")
                if job.output.resolve() in inputs:
                    raise UsageError(f"{job.output}: is an input of a job; write the output to "
                                     "another file")
                require_file(job.audio, "audio", AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)
                require_file(job.portrait, "portrait", IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
                done = job.output.is_file() and not overwrite
                require_output(job.output, overwrite or done, (".mp4",))
            except UsageError as error:
                problem, done = str(error), False
        checked.append(replace(job, problem=problem, done=done))
    return checked


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
    portrait: Annotated[Path | None, typer.Argument(help="The person (PNG, JPEG, WebP, TIFF, or a "
                                                    "video: its first frame), face and "
                                                    "shoulders visible.",
                                                    show_default=False)] = None,
    output: Annotated[Path | None, panel_option(
        "Output", "The MP4 to write \\[default: AUDIO_PORTRAIT.mp4, from the inputs' names, in "
        "the current folder].", "--output", "-o", show_default=False)] = None,
    model: Annotated[str | None, panel_option(
        "Model", "A distilled student: model folder or Hub repo id \\[default: the bundled "
        "starter model].", show_default=False, envvar="POSECAST_MODEL")] = None,
    revision: in_panel(revision_option("--model"), "Model") = None,
    motion: Annotated[str, panel_option(
        "Motion", "Motion from speech: 'procedural' (built in, no weights) or a model folder / "
        "repo id trained with `posecast train-motion`.")] = "procedural",
    motion_revision: in_panel(revision_option("--motion", "--motion-revision"), "Motion") = None,
    poses: Annotated[Path | None, panel_option(
        "Motion", "Follow this keypoint file (.npz) instead of motion from the speech.")] = None,
    steps: Annotated[int | None, panel_option(
        "Model", "Student steps \\[default: the model's, which it was trained for].", min=1,
        max=8)] = None,
    fps: Annotated[float, panel_option("Output", "Output frame rate.", min=1.0, max=120.0)]
    = 25.0,
    size: Annotated[str | None, panel_option(
        "Output", "Output WxH \\[default: the model's native size].")] = None,
    seed: in_panel(Seed, "Model") = 0,
    batch: Annotated[Path | None, panel_option(
        "Batch", "A CSV of jobs (columns audio, portrait, output; optional seed, model; paths "
        "relative to the CSV). The model loads once; failed jobs are reported, the rest go on; "
        "jobs whose output exists are skipped (rerun a stopped batch to finish it; --overwrite "
        "redoes them).", show_default=False)] = None,
    shard: Annotated[str | None, panel_option(
        "Batch", "With --batch: take jobs I, I+N, I+2N, … (I from 0), e.g. "
        "$SLURM_ARRAY_TASK_ID/8.", show_default=False)] = None,
    json_summary: in_panel(JsonSummary, "Output") = False,
    warn_minutes: Annotated[float, panel_option(
        "Output", "Warn (then render anyway) when the audio is longer than this.", min=0.0)]
    = 10.0,
    max_minutes: Annotated[float, panel_option(
        "Output", "Refuse audio whose header declares more than this (checked before it is "
        "decoded).", min=0.0)] = 180.0,
    compile: Annotated[bool | None, panel_option(
        "Device", "Compile the student's chunk step (CUDA graphs on CUDA; the warm-up before the "
        "first frame pays for it) \\[default: on CUDA, with dense attention or flex].",
        "--compile/--no-compile", show_default=False)] = None,
    device: in_panel(Device, "Device") = "auto",
    overwrite: in_panel(Overwrite, "Output") = False,
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
    from posecast.families import load_renderer, size_multiple
    from posecast.motion import load_motion
    from posecast.pipeline import Pipeline

    if size is not None:
        parse_size(size, 1)  # its form and bounds now; the model's multiple once it is known
    check_speech_then_portrait(audio, portrait, "render")
    if batch is None:
        if audio is None or portrait is None:
            raise UsageError("give AUDIO PORTRAIT [-o OUT.mp4], or --batch jobs.csv")
        if output is None:  # named from its inputs, in the current folder
            output = Path(f"{Path(audio).stem}_{Path(portrait).stem}.mp4")
        # every input and the output checked before any model loads
        require_file(audio, "audio", AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)
        require_file(portrait, "portrait", IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        require_output(output, overwrite, (".mp4",), inputs=(audio, portrait))
        jobs = [Job(1, audio, portrait, output, None, None)]
    else:
        if audio is not None or portrait is not None or output is not None:
            raise UsageError("--batch takes its jobs from the CSV; drop AUDIO, PORTRAIT and -o")
        jobs = check_jobs(read_jobs(batch), overwrite)  # duplicates are found across shards
        if shard is not None:
            index, count = parse_shard(shard)
            jobs = jobs[index::count]
    if shard is not None and batch is None:
        raise UsageError("--shard needs --batch")
    check_revision(revision, model, "--model")
    check_revision(motion_revision, None if motion == "procedural" else motion, "--motion")
    if poses is not None:
        require_file(poses, "pose file", (".npz",))
    from posecast.render import read_portrait

    # one job: its portrait's person is found before any model loads (no face: said at once)
    ready = {} if batch is not None else {portrait: read_portrait(portrait, on_note=warn)}
    torch_device = pick_device(device)
    motion_model = load_motion(motion, str(torch_device), motion_revision)
    say = err_console if json_summary else console
    pipelines = {}  # one per model: a batch loads each model once

    def renderer_for(source: str) -> Pipeline:
        if source not in pipelines:
            source_revision = revision if source == model else None  # a CSV row names its own
            shape = None if size is None else parse_size(size, size_multiple(source,
                                                                             source_revision))
            pipelines[source] = Pipeline(
                load_renderer(source, torch_device, size=shape, steps=steps, compile=compile,
                              revision=source_revision,
                              on_warning=lambda text: say.print(text, highlight=False)),
                motion_model)
        return pipelines[source]

    results = []
    try:
        for job in jobs:
            if job.done:
                say.print(f"skipped job {job.index}: {job.output} exists (--overwrite renders "
                          "it again)", highlight=False, soft_wrap=True)
                results.append({"job": job.index, "output": str(job.output),
                                "status": "skipped"})
                continue
            try:
                if job.problem is not None:
                    raise UsageError(job.problem)
                source = job.model or model or str(starter_model())
                job_seed = job.seed if job.seed is not None else seed
                renderer = renderer_for(source)
                result, first_frame_process = _render_one(
                    renderer, job, ready.get(job.portrait, job.portrait), poses, fps, job_seed,
                    warn_minutes, max_minutes)
            except Exception as error:
                if batch is None or not (isinstance(error, PosecastError) or _keep_going()):
                    raise
                # this job failed (a bad row, a broken model folder, …): report it, run the next
                message = str(error) if isinstance(error, PosecastError) else \
                    f"{type(error).__name__}: {_first_line(error)}"
                warn(f"error: job {job.index} ({job.output or 'no output'}): {message}")
                results.append({"job": job.index, "output": job.output and str(job.output),
                                "status": "failed", "error": message})
                continue
            # one job: the whole process too (start-up, imports and model loading included)
            whole = process_seconds() if batch is None else None
            say.print(f"wrote {result.output}: {result.seconds:.2f} s of video ({result.frames} "
                      f"frames, {renderer.width}x{renderer.height}, {renderer.steps} "
                      f"steps) in {result.elapsed:.2f} s = {result.realtime_factor:.2f}x real time "
                      f"(first frame after {result.first_frame:.2f} s; once started, "
                      f"{result.frames / result.streaming:.1f} FPS = "
                      f"{result.streaming_factor:.2f}x real time"
                      + ("" if whole is None else f"; whole process {whole:.2f} s = "
                         f"{result.seconds / whole:.2f}x real time, first frame "
                         f"{first_frame_process:.2f} s after the command started") + ")",
                      highlight=False,
                      soft_wrap=True)
            results.append({"job": job.index, "output": str(result.output), "status": "ok",
                            # what makes the video again: the model and its settings
                            "model": source, "revision": revision if source == model else None,
                            "seed": job_seed, "size": f"{renderer.width}x{renderer.height}",
                            "steps": renderer.steps, "fps": fps,
                            "seconds": round(result.seconds, 3), "frames": result.frames,
                            "elapsed": round(result.elapsed, 3),
                            "realtime_factor": round(result.realtime_factor, 3),
                            "streaming_factor": round(result.streaming_factor, 3),
                            **({} if whole is None else {
                                "process_seconds": round(whole, 3),
                                "process_first_frame_s": round(first_frame_process, 3),
                                "process_realtime_factor": round(result.seconds / whole, 3)})})
    except (KeyboardInterrupt, Terminated):
        if json_summary:  # the summary still lists every job; the CLI prints the one line
            done = {result["job"] for result in results}
            results += [{"job": job.index, "output": job.output and str(job.output),
                         "status": "stopped"} for job in jobs if job.index not in done]
            print_json(*_summary(results, batch is not None))
        raise
    failed = sum(result["status"] == "failed" for result in results)
    if json_summary:
        print_json(*_summary(results, batch is not None))
    if batch is not None:
        skipped = sum(result["status"] == "skipped" for result in results)
        say.print(f"{len(results) - failed - skipped} of {len(results)} jobs done"
                  + (f", {skipped} skipped (their outputs exist)" if skipped else "")
                  + (f", {failed} failed" if failed else ""), highlight=False)
    if failed:
        raise typer.Exit(1)


def _summary(results: list[dict], batch: bool) -> tuple[dict, list[str], bool]:
    """The --json figures, outputs and ok (ui.json_summary): one render's own figures; for a
    batch every job (each with its model, seed, size, steps) and how many were done, failed,
    skipped (done before) and stopped. ok: nothing failed or was stopped."""
    counts = {status: sum(result["status"] == status for result in results)
              for status in ("ok", "failed", "skipped", "stopped")}
    outputs = [result["output"] for result in results if result["status"] == "ok"]
    ok = counts["failed"] == counts["stopped"] == 0
    if not batch:  # its status ("ok", or "stopped" by a signal) and figures
        return {key: value for key, value in results[0].items()
                if key not in ("job", "output")}, outputs, ok
    return {"jobs": results, "done": counts["ok"], "failed": counts["failed"],
            "skipped": counts["skipped"], "stopped": counts["stopped"]}, outputs, ok


def _keep_going() -> bool:
    """Whether a batch goes on after an unexpected error in one job (not with --debug, which
    shows its traceback)."""
    from posecast.cli import _debug

    return not _debug["on"]


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


def _render_one(pipeline, job: Job, portrait, poses, fps: float, seed: int,
                warn_minutes: float, max_minutes: float):
    """The job's RenderResult and when its first frame was written, in seconds since the
    process started. `portrait`: the job's path, or the Portrait read before the model
    loaded."""
    first_frame = []

    def on_progress(done: float, total: float) -> None:
        if not first_frame:
            first_frame.append(process_seconds())
        bar.update(task, completed=done, total=total)

    with progress_bar("s of video") as bar:
        task = bar.add_task(f"rendering {job.output.name}", total=None)
        result = pipeline.render(job.audio, portrait, job.output, poses=poses, fps=fps,
                                 seed=seed, on_progress=on_progress, on_warning=warn,
                                 warn_seconds=warn_minutes * 60, max_minutes=max_minutes)
    return result, first_frame[0]
