"""Typed, range-checked settings: each settings dataclass lists its fields as {name: Rule}.

`check_fields` compares values with the rules and raises one ConfigError naming the field, its
value and what is allowed; `build` makes a dataclass from a JSON object, reporting unknown keys
the same way. The loaders put the file's name in front, so a bad config.json reads e.g.
    teacher/config.json: depth is 1000000000; allowed: a whole number from 1 to 64
and nothing is allocated or downloaded before the check.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from posecast.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one field accepts: a type (int, float, bool, str, or tuple for a list of `item`),
    an inclusive range for numbers (and list items), choices for text, None if `optional`."""

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    item: type | None = None  # tuple: the type of each item (int or str)
    max_items: int | None = None  # tuple: at most this many items

    def describe(self) -> str:
        if self.kind is tuple:
            numbers = f" from {self.low} to {self.high}" if self.low is not None else ""
            noun = "whole numbers" if self.item is int else "texts"
            text = f"a list of at most {self.max_items} {noun}{numbers}"
        elif self.choices:
            text = " or ".join([", ".join(self.choices[:-1]), self.choices[-1]]
                               if len(self.choices) > 1 else self.choices)
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "a text"
        else:
            text = (f"a whole number from {self.low} to {self.high}" if self.kind is int
                    else f"a number from {self.low:g} to {self.high:g}")
        return text + (" or null" if self.optional else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind is tuple:
            return (isinstance(value, (tuple, list)) and len(value) <= self.max_items
                    and all(_single(item, self.item, self.low, self.high) for item in value))
        if self.choices:
            return value in self.choices
        return _single(value, self.kind, self.low, self.high)


def _single(value: Any, kind: type, low: float | None, high: float | None) -> bool:
    if isinstance(value, bool) != (kind is bool):  # JSON true is not the number 1
        return False
    allowed = (int, float) if kind is float else (kind,)
    if not isinstance(value, allowed):
        return False
    return low is None or low <= value <= high  # NaN compares False: out of range too


def whole(low: int, high: int, optional: bool = False) -> Rule:
    return Rule(int, low, high, optional=optional)


def number(low: float, high: float, optional: bool = False) -> Rule:
    return Rule(float, low, high, optional=optional)


def one_of(*choices: str) -> Rule:
    return Rule(str, choices=choices)


FLAG = Rule(bool)
TEXT_OR_NULL = Rule(str, optional=True)


def shown(value: Any) -> str:
    """A value as the JSON a user wrote (strings quoted, tuples as lists), kept short."""
    try:
        text = json.dumps(list(value) if isinstance(value, tuple) else value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(values: Mapping[str, Any], rules: Mapping[str, Rule], prefix: str = "") -> None:
    """Raise ConfigError for the first value its rule does not accept (values without a rule
    are not checked)."""
    for name, value in values.items():
        rule = rules.get(name)
        if rule is not None and not rule.accepts(value):
            raise ConfigError(prefix + name, f"is {shown(value)}; allowed: {rule.describe()}")


def build(cls: type, data: Any, prefix: str = "", convert: Mapping[str, Any] | None = None):
    """`cls(**data)` for a JSON object `data`, with unknown keys and bad values reported by field
    name (`prefix` names where the object sits, e.g. "codec."); `convert` maps a field to a
    function applied to its JSON value first (e.g. lists to tuples)."""
    where = prefix.rstrip(".") or "the config"
    if not isinstance(data, dict):
        raise ConfigError(where, f"is {shown(data)}; allowed: an object of fields")
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise ConfigError(prefix + str(unknown[0]), f"is not a known field; known: "
                          f"{', '.join(known)}")
    data = {name: (convert[name](value) if convert and name in convert else value)
            for name, value in data.items()}
    try:
        return cls(**data)
    except ConfigError as error:
        raise error.within(prefix) from None


def as_tuple(value: Any) -> Any:
    """A JSON list as a tuple (anything else is left for the rule to refuse)."""
    return tuple(value) if isinstance(value, list) else value
