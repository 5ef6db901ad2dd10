"""`posecast import …`: public weights of other model families → posecast model folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from posecast.cli.options import JsonSummary, Overwrite
from posecast.cli.ui import print_result, warn

import_app = typer.Typer(help="Convert public weights into posecast model folders (once; the "
                         "folders then work offline).", no_args_is_help=True)


@import_app.command("mimicmotion")
def import_mimicmotion_command(
    out: Annotated[Path, typer.Option("--output", "-o", help="The model folder to write.",
                                      show_default=False)],
    svd: Annotated[str, typer.Option(
        help="SVD img2vid-xt-1-1: a Hub repo id (gated: accept its licence on the Hub and set "
        "HF_TOKEN) or a local folder laid out like it \\[default: the Hub repo named above].",
        show_default=False)]
    = "stabilityai/stable-video-diffusion-img2vid-xt-1-1",
    checkpoint: Annotated[str, typer.Option(
        help="MimicMotion's checkpoint: REPO:FILE on the Hub or a local .pth file "
        "\\[default: MimicMotion_1-1.pth of tencent/MimicMotion].", show_default=False)]
    = "tencent/MimicMotion:MimicMotion_1-1.pth",
    revision: Annotated[str | None, typer.Option(
        help="A Hub revision (branch, tag or commit) of the SVD repo.", show_default=False)]
    = None,
    json_summary: JsonSummary = False,
    overwrite: Overwrite = False,
) -> None:
    """Import MimicMotion (the paper's teacher): SVD's UNet with a pose network.

    Downloads SVD's components (stabilityai/stable-video-diffusion-img2vid-xt-1-1) and
    MimicMotion's checkpoint (tencent/MimicMotion) through the Hugging Face cache
    (HF_TOKEN and HF_HUB_OFFLINE are honoured), reads the checkpoint's pickle with
    weights_only=True (anything else is refused without running it), checks every key and
    shape against SVD's UNet, and writes a model folder in safetensors with a card that carries
    both licences.

    [bold]Example[/bold]

      posecast import mimicmotion --output mimicmotion/
    """
    from posecast.extras import require_extra
    from posecast.mimicmotion.importer import LICENCES, import_mimicmotion

    require_extra("mimicmotion")
    warn(LICENCES)
    folder = import_mimicmotion(out, svd, checkpoint, revision, overwrite, on_message=warn)
    print_result(f"wrote {folder}", {}, json_summary, outputs=[folder])


@import_app.command("lpips")
def import_lpips_command(
    vgg: Annotated[Path, typer.Argument(help="torchvision's VGG16 weights (vgg16-397923af.pth "
                                        "from download.pytorch.org).", show_default=False)],
    lin: Annotated[Path, typer.Argument(help="LPIPS v0.1's linear heads (lpips/weights/v0.1/"
                                        "vgg.pth of the lpips package).", show_default=False)],
    out: Annotated[Path, typer.Option("--output", "-o", help="The folder to write (the plug-in's "
                                      "weights and a card).", show_default=False)],
    json_summary: JsonSummary = False,
    overwrite: Overwrite = False,
) -> None:
    """Import LPIPS (VGG16) for the perceptual plug-in of `posecast distill --perceptual`.

    Reads the two published .pth files with torch.load(weights_only=True) (anything but
    tensors is refused without running it), checks every key and shape, and writes
    OUT/lpips_vgg16.safetensors with a card that names both sources and their licences.

    [bold]Example[/bold]

      curl -LO https://download.pytorch.org/models/vgg16-397923af.pth

      curl -L -o lpips_vgg.pth https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth

      posecast import lpips vgg16-397923af.pth lpips_vgg.pth --output lpips/

      posecast distill clips/ --teacher teacher/ --output student/ --perceptual lpips=lpips/:0.1
    """
    from posecast.paths import require_file
    from posecast.train.perceptual import import_lpips

    folder = import_lpips(require_file(vgg, "VGG16 weights"),
                          require_file(lin, "LPIPS weights"), out, overwrite)
    print_result(f"wrote {folder}", {}, json_summary, outputs=[folder])
