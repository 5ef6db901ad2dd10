"""posecast: a talking, gesturing video of one portrait from a speech recording, in real time
on one GPU.

From Python, `posecast.Pipeline` is the whole tool:

    import posecast

    pipe = posecast.Pipeline.from_pretrained()     # the bundled starter, or a folder / repo id
    pipe.render("speech.wav", "portrait.png", "talk.mp4")
    for frame in pipe("speech.wav", "portrait.png"):
        frame.index, frame.time, frame.image       # (H, W, 3) uint8 RGB, as they are made

From a shell: `posecast render speech.wav portrait.png` (see `posecast --help`).
"""

from posecast.version import __version__

__all__ = ["Pipeline", "__version__"]


def __dir__() -> list[str]:
    return sorted({*globals(), "Pipeline"})  # the lazily imported name is listed too


def __getattr__(name: str):
    """`posecast.Pipeline` imported on first use (torch stays out of `import posecast`)."""
    if name == "Pipeline":
        from posecast.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'posecast' has no attribute {name!r}")
