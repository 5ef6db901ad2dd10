"""The error hierarchy. The CLI prints each as one line and exits with its `exit_code`."""

from __future__ import annotations


class PosecastError(Exception):
    """A known failure with a message written for the user (what went wrong and the fix)."""

    exit_code = 1


class UsageError(PosecastError):
    """The command line itself is wrong: a missing input, an output that exists, a bad option."""

    exit_code = 2


class InputError(PosecastError):
    """An input file exists but its content cannot be used (empty, corrupt, nothing detected)."""


class MediaError(PosecastError):
    """ffmpeg or an encoder/decoder failed; the message carries the tail of its stderr."""


class DetectionError(InputError):
    """A person, face or hand that the command needs was not found in the input."""


class Terminated(BaseException):
    """SIGTERM arrived (kill, timeout, SLURM, docker stop). Raised in the main thread like
    KeyboardInterrupt, so every cleanup runs; the CLI exits 143 (128 + 15) with one line."""


class ConfigError(UsageError, ValueError):
    """A setting (of a model's config.json, a --config file, a checkpoint's state) that is of
    the wrong type, out of range, or unknown. `field` is its dotted name ("codec.repo"); the
    loader that knows the file puts its name in front."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field} {detail}" if field else detail)
        self.field, self.detail = field, detail

    def within(self, prefix: str) -> ConfigError:
        """The same error for a field nested under `prefix` ("codec.")."""
        return ConfigError(prefix + self.field, self.detail)
