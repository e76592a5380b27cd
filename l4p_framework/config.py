"""YAML + key=value configuration: OmegaConf merging, pydantic validation, readable errors."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .suggest import did_you_mean

M = TypeVar("M", bound=BaseModel)


MAX_YAML_NODES = 100_000
"""Most values a YAML file may expand to through its aliases (a config holds a few hundred)."""

_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "seq", "map")}


def load_yaml(
    path: str | os.PathLike, error: type[ConfigError] = ConfigError, *, interpolation: bool = True
) -> dict:
    """A YAML mapping from `path`; a one-line `error` naming the file when it is missing or malformed.

    Refused before any value is built: tags other than the plain YAML types (``!!python/...``
    would construct objects), aliases expanding to more than MAX_YAML_NODES values (a "billion
    laughs" document) and recursive aliases. `interpolation=False` also refuses ``${...}`` values
    (OmegaConf would resolve ``${oc.env:VAR}`` from the environment): files from elsewhere, such
    as a registry, hold plain values only.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path} cannot be read as UTF-8 text ({exc}); is it a YAML file?") from None
    try:
        _check_yaml_events(text, path, error)
        conf = OmegaConf.load(io.StringIO(text))
        if not interpolation:
            _refuse_interpolation(OmegaConf.to_container(conf, resolve=False), path, error)
        data = OmegaConf.to_container(conf, resolve=True)
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML ({_yaml_problem(exc)}); fix the syntax") from None
    except (OmegaConfBaseException, ValueError) as exc:
        raise error(f"{path} is not a valid config: {_one_line(str(exc))}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path} must hold a mapping at the top level, found {type(data).__name__}")
    return data


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """'line 3, column 7: did not find expected key' from a PyYAML error (one line)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return _one_line(where + problem)


def _check_yaml_events(text: str, path: Path, error: type[ConfigError]) -> None:
    """Walk the parser events of `text` (no value is built) and refuse non-plain tags, recursive
    aliases and alias expansion beyond MAX_YAML_NODES values."""
    expanded: dict[str, int] = {}  # anchor -> number of values the anchored node expands to
    open_nodes: list[list] = []  # [anchor, values so far] of each collection being parsed
    for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        line = event.start_mark.line + 1
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _PLAIN_TAGS and tag != "!":
            raise error(
                f"{path}: line {line} has the YAML tag {tag.replace('tag:yaml.org,2002:', '!!')}; "
                "l4p config files hold plain values only (tags can construct Python objects), remove it"
            )
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            open_nodes.append([event.anchor, 1])
            continue
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            anchor, size = open_nodes.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, size = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            if any(node[0] == event.anchor for node in open_nodes):
                raise error(f"{path}: line {line}: alias *{event.anchor} refers to a node containing it")
            anchor, size = None, expanded.get(event.anchor, 1)  # undefined: the loader reports it
        else:
            continue
        if anchor is not None:
            expanded[anchor] = size
        if open_nodes:
            open_nodes[-1][1] += size
            if open_nodes[-1][1] > MAX_YAML_NODES:
                raise error(
                    f"{path}: line {line}: YAML aliases expand this document to more than "
                    f"{MAX_YAML_NODES} values (a 'billion laughs' document); write the values out"
                )


def _refuse_interpolation(data: Any, path: Path, error: type[ConfigError], key: str = "") -> None:
    """Raise `error` at the first string value holding an OmegaConf ``${...}`` interpolation."""
    if isinstance(data, dict):
        for k, v in data.items():
            _refuse_interpolation(v, path, error, f"{key}.{k}" if key else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _refuse_interpolation(v, path, error, f"{key}[{i}]")
    elif isinstance(data, str) and "${" in data:
        raise error(
            f"{path}: {key} is {data!r}, an interpolation; this file may not use ${{...}} (it could "
            "read environment variables or other keys), write the value itself"
        )


def apply_overrides(
    data: dict,
    overrides: Sequence[str],
    source: str = "command line",
    error: type[ConfigError] = ConfigError,
    model: type[BaseModel] | None = None,
) -> dict:
    """Apply `key.path=value` (key must exist) and `+key.path=value` (adds a key) overrides.

    Values are parsed as YAML scalars/lists by OmegaConf (`lr=1e-3`, `layers=[1,2]`). A key
    "exists" if it is in `data` or is a field of `model` (so defaults can be overridden).
    """
    conf = OmegaConf.create(data)
    for item in overrides:
        add = item.startswith("+")
        body = item[1:] if add else item
        if "=" not in body:
            raise error(f"override {item!r} ({source}) must look like key=value or +key=value")
        key, _ = body.split("=", 1)
        absent = OmegaConf.select(conf, key, throw_on_missing=False, default="<absent>") == "<absent>"
        if not add and absent and not (model is not None and _schema_has(model, key.split("."))):
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(conf, parent_key) if parent_key else conf
            choices = list(parent.keys()) if OmegaConf.is_dict(parent) else []
            node = _schema_node(model, parent_key.split(".") if parent_key else []) if model else None
            choices += list(node.model_fields) if node else []
            raise error(
                f"override {item!r} ({source}): key {key!r} does not exist{did_you_mean(leaf, choices)}; "
                f"use +{body} to add a new key"
            )
        try:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist([body]))
        except OmegaConfBaseException as exc:
            raise error(f"override {item!r} ({source}) is invalid: {exc}") from None
    return OmegaConf.to_container(conf, resolve=True)


def merge_configs(
    files: Sequence[str | os.PathLike],
    overrides: Sequence[str] = (),
    base: dict | None = None,
    error: type[ConfigError] = ConfigError,
    model: type[BaseModel] | None = None,
    *,
    interpolation: bool = True,
) -> dict:
    """Merge `base`, then each YAML file in order, then the overrides (checked against `model`).

    `interpolation=False`: the files may not hold ``${...}`` values (see `load_yaml`).
    """
    conf = OmegaConf.create(base or {})
    for f in files:
        conf = OmegaConf.merge(conf, OmegaConf.create(load_yaml(f, error, interpolation=interpolation)))
    return apply_overrides(OmegaConf.to_container(conf, resolve=True), overrides, error=error, model=model)


def _schema_node(model: type[BaseModel], path: Sequence[str]):
    """The pydantic model that the dotted `path` leads to; None for free-form values, False if invalid."""
    current: type[BaseModel] | None = model
    i = 0
    while i < len(path) and current is not None:
        field = current.model_fields.get(path[i])
        if field is None:
            return False
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        models = [a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        is_dict = getattr(annotation, "__origin__", None) is dict
        current = models[0] if models else None
        i += 2 if (is_dict and models) else 1  # dict[str, Model]: skip the free key
    return current


def _schema_has(model: type[BaseModel], path: Sequence[str]) -> bool:
    return _schema_node(model, path) is not False


def validate(
    model: type[M], data: Any, source: str, prefix: str = "", error: type[ConfigError] = ConfigError
) -> M:
    """model.model_validate(data), turning pydantic errors into one readable ConfigError.

    Each problem names `source` (file), the key path, what was expected and what was found,
    and suggests the nearest valid key for unknown keys.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = [_explain(e, model, prefix) for e in exc.errors()]
        raise error(f"{source}: invalid configuration\n  " + "\n  ".join(lines)) from None


def _explain(err: dict, model: type[BaseModel], prefix: str) -> str:
    loc = [str(p) for p in err["loc"]]
    path = ".".join([prefix, *loc] if prefix else loc)
    if err["type"] == "extra_forbidden":
        fields = _fields_at(model, err["loc"][:-1])
        return f"{path}: unknown key{did_you_mean(loc[-1], fields)}; valid keys here: {sorted(fields)}"
    if err["type"] == "missing":
        return f"{path}: required key is missing"
    found = err.get("input")
    shown = repr(found) if not isinstance(found, dict) else "a mapping"
    return f"{path}: {err['msg']} (found {shown[:80]})"


def _fields_at(model: type[BaseModel], loc: Sequence) -> list[str]:
    """Field names of the (nested) model at `loc`, best effort."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None and args:  # dict[str, Model]
            current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return list(getattr(current, "model_fields", {}))
