"""posecast: real-time co-speech video from one portrait and a speech recording."""

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
