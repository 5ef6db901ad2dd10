"""Checks on input and output paths, and atomic writes (nothing half-written is left behind)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from posecast.errors import UsageError
from posecast.ownership import TEMP_PREFIX, mark

# Files we create get the permissions of an ordinary open(): 0666 less the process umask.
_UMASK = os.umask(0)
os.umask(_UMASK)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aac", ".opus")


def require_file(path: str | os.PathLike, kind: str,
                 extensions: Iterable[str] | None = None) -> Path:
    """Return `path` as a Path if it names an existing, non-directory file of an allowed type.

    `kind` names the file in messages ("portrait", "audio"). Emptiness and content are checked by
    the readers, which know the format.
    """
    path = Path(path)
    if extensions is not None:
        extensions = tuple(extensions)
        if path.suffix.lower() not in extensions:
            raise UsageError(f"{path}: unsupported {kind} type '{path.suffix or '(none)'}'; "
                             f"use one of {', '.join(extensions)}")
    if not path.exists():
        raise UsageError(f"{path}: no such {kind} file; check the path")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, but a {kind} file is expected")
    return path


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Whether two paths name one file (through `..`, symbolic links or hard links)."""
    first, second = Path(first), Path(second)
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist
        return False


def require_output(path: str | os.PathLike, overwrite: bool,
                   extensions: Iterable[str] | None = None,
                   inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """Check an output path before any work is done: its folder exists, it is not taken, and
    it is none of the command's `inputs` (--overwrite would replace that input)."""
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise UsageError(f"{path}: is also an input of this command; write the output to "
                             "another file")
    if extensions is not None:
        extensions = tuple(extensions)
        if path.suffix.lower() not in extensions:
            raise UsageError(f"{path}: unsupported output type '{path.suffix or '(none)'}'; "
                             f"use one of {', '.join(extensions)}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{path}: the output folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{path}: the output folder {parent} is not writable")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give a file name for the output")
    if path.exists() and not overwrite:
        raise UsageError(f"{path}: already exists; pass --overwrite to replace it")
    return path


def usual_permissions(path: Path) -> None:
    """Give a file, or a folder and everything in it, the permissions ordinary new ones get
    under the umask (temporary files and folders are made 0600 / 0700)."""
    if path.is_dir():
        for inner in path.rglob("*"):
            os.chmod(inner, (0o777 if inner.is_dir() else 0o666) & ~_UMASK)
        os.chmod(path, 0o777 & ~_UMASK)
    else:
        os.chmod(path, 0o666 & ~_UMASK)


# Temporary files and folders are made beside their output, named
#   .posecast-<output stem>.<host>-<pid>.<random>.part<output suffix>
# (host: 8 hex digits of a hash of the host name), so a later run writing the same output
# recognises the ones whose process is gone (killed, say, by SIGKILL) and removes them.
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_pattern(path: Path) -> re.Pattern:
    return re.compile(rf"{re.escape(TEMP_PREFIX + path.stem)}\.(?P<host>[0-9a-f]{{8}})-"
                      rf"(?P<pid>\d{{1,7}})\.[^.]+\.part{re.escape(path.suffix)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def sweep_stale_temporaries(path: Path) -> None:
    """Remove what killed runs of this host left while writing `path`. A temporary whose
    process still runs, or that another host made (its process cannot be checked), stays."""
    pattern = _temp_pattern(path)
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def temporary_beside(path: str | os.PathLike, folder: bool = False) -> Path:
    """A new empty temporary file (or folder) beside `path`, named for it and this process;
    stale ones from killed runs writing `path` are swept first."""
    path = Path(path)
    sweep_stale_temporaries(path)
    prefix, suffix = f"{TEMP_PREFIX}{path.stem}.{_HOST}-{os.getpid()}.", f".part{path.suffix}"
    try:
        if folder:
            return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as error:
        raise UsageError(f"{path}: cannot create a file in {path.parent} "
                         f"({error.strerror or error})") from None
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def writing_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the right to write `path`: a second posecast process writing it at the same time
    (two renders to one -o, say, where the later would silently win) is refused in one line.
    The lock is an flock on a hidden file beside `path`, released by the kernel however this
    process ends, and the file is removed when the writing is done."""
    path = Path(path)
    lock = path.parent / f"{TEMP_PREFIX}{path.name}.lock"
    while True:
        try:
            handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise UsageError(f"{path}: cannot create a file in {path.parent} "
                             f"({error.strerror or error})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise UsageError(f"{path}: another posecast process is writing it right now; wait "
                             "for it to finish, or write to another path") from None
        with contextlib.suppress(OSError):
            if os.stat(lock).st_ino == os.fstat(handle).st_ino:
                break  # not a lock file that its last holder removed meanwhile
        os.close(handle)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still held, so no one else holds this file then
        os.close(handle)


def _holds_the_current_folder(path: Path) -> bool:
    return Path.cwd().resolve().is_relative_to(path.resolve())


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, kind: str) -> Iterator[Path]:
    """Yield a temporary folder beside `path` holding posecast's marker for a folder of `kind`
    (ownership.KINDS); on success it replaces `path` (a folder or file there is removed first:
    check it with ownership.require_replaceable before the work), on failure it is deleted. A
    killed run's is swept by the next run writing `path`."""
    path = Path(path)
    if _holds_the_current_folder(path):  # replacing it would pull the floor from under us
        raise UsageError(f"{path}: is the current folder (or holds it); give the new folder a "
                         "name of its own")
    with writing_lock(path):
        staging = temporary_beside(path, folder=True)
        try:
            mark(staging, kind)
            yield staging
            usual_permissions(staging)
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            os.replace(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success, delete on failure.

    The temporary name keeps the suffix, so writers that pick a format by extension still work.
    """
    path = Path(path)
    with writing_lock(path):
        tmp = temporary_beside(path)
        try:
            yield tmp
            # mkstemp makes 0600 files, and some writers (safetensors) recreate the file as 0600
            usual_permissions(tmp)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
