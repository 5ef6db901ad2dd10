"""Reading JSON files that posecast or its users wrote (model configs, checkpoint states,
manifests, timings): one place where every way such a file can be broken becomes OSError (it
cannot be read) or ValueError (a reason in words), which each caller turns into its one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "true or false",
               int: "a number", float: "a number", type(None): "null"}


def load_json(path: str | os.PathLike) -> Any:
    """The JSON value in `path`. Not UTF-8 (UnicodeDecodeError), not JSON (JSONDecodeError)
    and nested too deeply for Python's parser (a RecursionError otherwise) are ValueErrors."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


def load_json_object(path: str | os.PathLike) -> dict:
    """`load_json` for files whose top level must be an object (settings, states)."""
    value = load_json(path)
    if not isinstance(value, dict):
        raise ValueError(f"holds {_JSON_TYPES.get(type(value), 'something')} where an object "
                         "({…}) belongs")
    return value
