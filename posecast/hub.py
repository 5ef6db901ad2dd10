"""Every weight lookup: a local folder, else the Hugging Face cache, else a download.

`HF_HUB_OFFLINE=1` (read at call time) restricts lookups to the cache; `HF_TOKEN` is used by
huggingface_hub for gated or private repos. Hub failures become one line that says what to do.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from posecast.errors import PosecastError, UsageError

REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_repo_id(text: str) -> bool:
    """Whether `text` has the form of a Hub repo id: owner/name, without '..'."""
    return REPO_ID.fullmatch(text) is not None and ".." not in text


def folder_inside(text: str, root: Path) -> Path | None:
    """`text` as an existing folder inside `root` (a relative path, links followed), or None."""
    if Path(text).is_absolute():
        return None
    candidate = (root / text).resolve()
    return candidate if candidate.is_dir() and candidate.is_relative_to(root.resolve()) else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _hub_errors(text: str, kind: str, revision: str | None,
                offline: bool | None = None) -> Iterator[None]:
    """Turn huggingface_hub's failures for `text` into one line that says what to do
    (`offline`: the lookup was restricted to the cache; default: HF_HUB_OFFLINE)."""
    from huggingface_hub import errors

    offline = _offline() if offline is None else offline
    try:
        yield
    except errors.HFValidationError:
        raise UsageError(f"{text}: not a valid Hub repo id (owner/name) nor a folder") from None
    except errors.GatedRepoError:
        raise PosecastError(f"{text}: this Hub repo is gated; accept its terms on its Hub page, "
                            "then set HF_TOKEN to a token of that account") from None
    except errors.RepositoryNotFoundError:
        raise UsageError(f"{text}: no such {kind} on the Hugging Face Hub (or it is private: set "
                         "HF_TOKEN); check the repo id or give a local folder") from None
    except errors.RevisionNotFoundError:
        raise UsageError(f"{text}: revision '{revision}' does not exist on the Hub") from None
    except errors.LocalEntryNotFoundError:
        if offline:
            raise PosecastError(f"{text}: not in the local Hugging Face cache and HF_HUB_OFFLINE "
                                "is set (or local_files_only); download it on a connected "
                                f"machine (`hf download {text}`) or give a local folder"
                                ) from None
        raise PosecastError(f"{text}: the Hugging Face Hub cannot be reached and the {kind} is "
                            "not cached; connect, or give a local folder") from None
    except errors.EntryNotFoundError:  # after its subclass LocalEntryNotFoundError
        raise UsageError(f"{text}: no such file in that Hub repo; check the name") from None
    except (OSError, errors.HfHubHTTPError) as error:
        raise PosecastError(f"{text}: download failed ({error}); check the network or give a "
                            "local folder") from None


def resolve_folder(path_or_repo: str | os.PathLike, revision: str | None = None,
                   allow_patterns: list[str] | None = None, kind: str = "model", *,
                   cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                   local_files_only: bool | None = None) -> Path:
    """A local folder holding the files of `path_or_repo` (a folder path or a Hub repo id).

    `revision` (branch, tag or commit), `cache_dir` (default: HF_HUB_CACHE), `token` (default:
    HF_TOKEN or the saved login) and `local_files_only` (default: HF_HUB_OFFLINE) mean what
    they mean to huggingface_hub; they apply to repo ids only."""
    local = Path(path_or_repo).expanduser()
    if local.is_dir():
        return local
    text = str(path_or_repo)
    looks_like_path = text.startswith((".", "/", "~")) or text.count("/") != 1 or local.exists()
    if looks_like_path:
        raise UsageError(f"{text}: no such {kind} folder, and it is not a Hub repo id "
                         "(owner/name); check the path")
    import huggingface_hub

    offline = _offline() if local_files_only is None else local_files_only
    with _hub_errors(text, kind, revision, offline):
        folder = huggingface_hub.snapshot_download(
            repo_id=text, revision=revision, allow_patterns=allow_patterns, token=token,
            local_files_only=offline, cache_dir=cache_dir or os.environ.get("HF_HUB_CACHE"))
    return Path(folder)


def resolve_file(spec: str | os.PathLike, revision: str | None = None,
                 kind: str = "file") -> Path:
    """A local file for `spec`: a file path, or REPO:FILE (a file of a Hub repo)."""
    local = Path(spec).expanduser()
    if local.is_file():
        return local
    text = str(spec)
    repo, _, filename = text.partition(":")
    if not filename or local.exists() or repo.count("/") != 1:
        raise UsageError(f"{text}: no such {kind}; give a file path or REPO:FILE "
                         "(owner/name:file on the Hugging Face Hub)")
    import huggingface_hub

    with _hub_errors(text, kind, revision):
        path = huggingface_hub.hf_hub_download(
            repo_id=repo, filename=filename, revision=revision, local_files_only=_offline(),
            cache_dir=os.environ.get("HF_HUB_CACHE"))
    return Path(path)
