"""`posecast export` and `posecast upload`: a trained model's files and card, as a folder or a
Hub repo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import JsonSummary, Overwrite
from posecast.cli.ui import print_result, warn

License = Annotated[str | None, typer.Option(
    "--license", help="The licence id the card declares (Hub ids: apache-2.0, mit, "
    "cc-by-4.0, other, …) \\[default: apache-2.0; other for MimicMotion models, whose own "
    "licences apply].", show_default=False)]


def export_command(
    run: Annotated[Path, typer.Argument(help="A run folder (the --output of `posecast train` or "
                                        "`distill`) or a model folder.", show_default=False)],
    out: Annotated[Path, typer.Argument(help="The model folder to write.",
                                        show_default=False)],
    license: License = None,
    json_summary: JsonSummary = False,
    overwrite: Overwrite = False,
) -> None:
    """Copy a trained model out of its run folder, ready to render or publish.

    config.json, model.safetensors and a model card (README.md) with the licence, library
    name, base model, the data and the recipe; no checkpoint/, ode_pairs/, samples/ or training
    log. OUT then renders like any model folder and can be published with `posecast upload` or
    `hf upload`.

    [bold]Example[/bold]

      posecast export runs/student my-student/
    """
    from posecast.publish import export_model

    export = export_model(run, out, license, overwrite)
    print_result(f"wrote {export.folder} ({', '.join(export.files)})",
                 {"family": export.family, "files": export.files}, json_summary,
                 outputs=[export.folder])


def upload_command(
    source: Annotated[Path, typer.Argument(help="A run folder or a model folder (exported or "
                                           "not).", show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="The Hub model repo, OWNER/NAME (created when "
                                           "missing).", show_default=False)],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private (an "
                                          "existing repo keeps its visibility).")] = False,
    revision: Annotated[str | None, typer.Option(
        "--revision", help="The branch to commit to (created from main when missing) "
        "\\[default: main].", show_default=False)] = None,
    license: License = None,
    json_summary: JsonSummary = False,
) -> None:
    """Publish a model on the Hugging Face Hub (the files `posecast export` writes).

    Exactly config, weights and card, in one commit. The token is HF_TOKEN (or
    `hf auth login`'s); it needs write access.

    [bold]Examples[/bold]

      posecast upload runs/student me/posecast-student

      posecast upload runs/student me/posecast-student --revision step-2000 --private
    """
    from posecast.publish import upload_model

    upload = upload_model(source, repo_id, private, revision, license, on_message=warn)
    print_result(f"uploaded {', '.join(upload.files)} to {upload.repo_id} ({upload.revision}): "
                 f"{upload.url}", {"repo_id": upload.repo_id, "revision": upload.revision,
                                   "url": upload.url, "files": upload.files}, json_summary)
