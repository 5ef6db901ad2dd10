"""posecast: real-time co-speech video from one portrait and a speech recording."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("posecast")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    """`posecast.Pipeline` imported on first use (torch stays out of `import posecast`)."""
    if name == "Pipeline":
        from posecast.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'posecast' has no attribute {name!r}")
