"""The plugin host: discovers `l4p` entry points with pluggy and collects their typed specs.

Loading is tolerant: a plugin that fails to import, register or return valid specs is recorded
(distribution, version, error) and everything else keeps working; the error surfaces only when
something it provides is asked for. Environment variables:

- ``L4P_STRICT_PLUGINS=1``: any plugin error is fatal (raised as PluginError).
- ``L4P_DISABLE_PLUGINS=a,b``: skip these plugins (entry-point or distribution names).
- ``L4P_LOAD_PLUGINS=a,b``: load only these plugins.
"""

from __future__ import annotations

import dataclasses
import os
import traceback
from importlib import metadata
from typing import Any

import pluggy
from pydantic import BaseModel

from . import hooks
from .errors import PluginError
from .specs import DatasetSpec, EncoderSpec, HeadSpec, OutputSpec, PluginRecord, SubcommandSpec
from .suggest import did_you_mean

ENTRY_POINT_GROUP = "l4p"
_HOOK_TYPES = {
    "l4p_heads": HeadSpec,
    "l4p_encoders": EncoderSpec,
    "l4p_datasets": DatasetSpec,
    "l4p_subcommands": SubcommandSpec,
}


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name, "").strip()
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


@dataclasses.dataclass
class _Plugin:
    name: str
    distribution: str
    version: str
    status: str = "active"
    error: str = ""
    hooks: tuple[str, ...] = ()
    provides: dict[str, list[str]] = dataclasses.field(default_factory=dict)


class PluginHost:
    """A pluggy PluginManager for project "l4p" plus bookkeeping of what each plugin provides."""

    def __init__(self, strict: bool | None = None):
        self.pm = pluggy.PluginManager(hooks.PROJECT)
        self.pm.add_hookspecs(hooks)
        self.strict = (
            os.environ.get("L4P_STRICT_PLUGINS", "") in ("1", "true", "yes") if strict is None else strict
        )
        self._plugins: dict[str, _Plugin] = {}
        self._cache: dict[str, dict[str, Any]] = {}

    # -- registration ------------------------------------------------------------------------
    def load_entrypoints(self) -> PluginHost:
        """Import and register every installed `l4p` entry point (tolerantly)."""
        disabled, only = _env_list("L4P_DISABLE_PLUGINS"), _env_list("L4P_LOAD_PLUGINS")
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "<unknown>"
            version = ep.dist.version if ep.dist is not None else ""
            names = {ep.name, dist}
            if ep.name in self._plugins:
                continue
            if (disabled and names & disabled) or (only is not None and not names & only):
                self._plugins[ep.name] = _Plugin(ep.name, dist, version, "blocked", "disabled by environment")
                continue
            try:
                plugin = ep.load()
            except (Exception, SystemExit) as exc:  # sys.exit() at import fails one plugin, not the CLI
                self._fail(_Plugin(ep.name, dist, version), f"import failed: {_describe(exc)}", exc)
                continue
            self.register(plugin, name=ep.name, distribution=dist, version=version)
        return self

    def register(
        self, plugin: object, name: str | None = None, distribution: str = "<in-memory>", version: str = ""
    ) -> None:
        """Register a plugin object/module in memory (tests, notebooks, programmatic use)."""
        name = name or getattr(plugin, "__name__", type(plugin).__name__)
        record = _Plugin(name, distribution, version)
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except Exception as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            self._fail(record, f"registration failed: {_describe(exc)}", exc)
            return
        record.hooks = tuple(sorted(i.name for i in self.pm.get_hookcallers(plugin) or []))
        self._plugins[name] = record
        self._cache.clear()

    def _fail(self, record: _Plugin, message: str, exc: BaseException | None = None) -> None:
        record.status, record.error = "failed", message
        self._plugins[record.name] = record
        self._cache.clear()
        if self.strict:
            raise PluginError(
                f"plugin {record.name!r} (distribution {record.distribution} {record.version}) {message} "
                "[L4P_STRICT_PLUGINS is set]"
            ) from exc

    # -- collection ---------------------------------------------------------------------------
    def _collect(self, hook_name: str) -> dict[str, Any]:
        if hook_name in self._cache:
            return self._cache[hook_name]
        spec_type = _HOOK_TYPES[hook_name]
        found: dict[str, Any] = {}
        owners: dict[str, list[_Plugin]] = {}
        kind = hook_name.removeprefix("l4p_")
        for p in self._plugins.values():  # recollecting (after a failure) must not list specs twice
            p.provides.pop(kind, None)
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            record = self._plugins.get(impl.plugin_name)
            if record is None or record.status != "active":
                continue
            try:
                specs = impl.function()
                bad = [s for s in specs if not isinstance(s, spec_type)]
                if bad:
                    raise TypeError(
                        f"{hook_name} returned {type(bad[0]).__name__}, expected {spec_type.__name__}"
                    )
                for spec in specs:
                    _check_fields(spec)
            except (Exception, SystemExit) as exc:
                self._fail(record, f"{hook_name}() failed: {_describe(exc)}", exc)
                continue
            for spec in specs:
                fields = {f.name for f in dataclasses.fields(spec)}
                update = {"distribution": record.distribution}
                if "distribution_version" in fields:
                    update["distribution_version"] = record.version
                owners.setdefault(spec.name, []).append(record)
                found.setdefault(spec.name, dataclasses.replace(spec, **update))
                record.provides.setdefault(kind, []).append(spec.name)
        for name, recs in owners.items():
            if len(recs) > 1:
                dists = " and ".join(f"{r.distribution} (plugin {r.name!r})" for r in recs)
                message = f"{hook_name.removeprefix('l4p_')[:-1]} name {name!r} is registered by both {dists}"
                found[name] = PluginError(
                    f"{message}; uninstall one of them or disable it with L4P_DISABLE_PLUGINS"
                )
                for r in recs:
                    r.error = message
                if self.strict:
                    raise found[name]
        self._cache[hook_name] = found
        return found

    def fail_provider(
        self, hook_name: str, spec_name: str, message: str, exc: BaseException | None = None
    ) -> str:
        """Mark failed the plugin whose `hook_name` spec `spec_name` broke when used; returns its name.

        For callers that run plugin code themselves (the CLI calling a subcommand's add_arguments).
        Raises PluginError in strict mode.
        """
        kind = hook_name.removeprefix("l4p_")
        record = next(
            (
                p
                for p in self._plugins.values()
                if p.status == "active" and spec_name in p.provides.get(kind, [])
            ),
            None,
        )
        if record is None:  # not from a known active plugin: nothing to record
            if self.strict:
                raise PluginError(f"{kind[:-1]} {spec_name!r} {message} [L4P_STRICT_PLUGINS is set]") from exc
            return "<unknown>"
        self._fail(record, f"{kind[:-1]} {spec_name!r} {message}", exc)
        return record.name

    def _get(self, hook_name: str, name: str, what: str):
        specs = self._collect(hook_name)
        spec = specs.get(name)
        if isinstance(spec, PluginError):
            raise spec
        if spec is None:
            failed = [p for p in self._plugins.values() if p.status == "failed"]
            hint = "".join(f"\n  plugin {p.name!r} ({p.distribution}) failed: {p.error}" for p in failed)
            valid = sorted(k for k, v in specs.items() if not isinstance(v, PluginError))
            raise PluginError(
                f"no {what} named {name!r}{did_you_mean(name, valid)}; installed: {valid}. "
                f"Install its plugin package (e.g. pip install l4p-head-{name}){hint}"
            )
        return spec

    def _valid(self, hook_name: str) -> dict[str, Any]:
        return {k: v for k, v in self._collect(hook_name).items() if not isinstance(v, PluginError)}

    def heads(self) -> dict[str, HeadSpec]:
        return self._valid("l4p_heads")

    def encoders(self) -> dict[str, EncoderSpec]:
        return self._valid("l4p_encoders")

    def datasets(self) -> dict[str, DatasetSpec]:
        return self._valid("l4p_datasets")

    def subcommands(self) -> dict[str, SubcommandSpec]:
        return self._valid("l4p_subcommands")

    def get_head(self, name: str) -> HeadSpec:
        return self._get("l4p_heads", name, "head")

    def get_dataset(self, name: str) -> DatasetSpec:
        return self._get("l4p_datasets", name, "dataset")

    def records(self) -> list[PluginRecord]:
        """One record per plugin (after collecting every hook, so late failures show)."""
        for hook_name in _HOOK_TYPES:
            self._collect(hook_name)
        return [
            PluginRecord(
                name=p.name,
                distribution=p.distribution,
                version=p.version,
                status=p.status,
                hooks=p.hooks,
                error=p.error,
                provides={k: tuple(v) for k, v in p.provides.items()},
            )
            for p in self._plugins.values()
        ]


_HEAD_CALLABLES = ("layers", "build", "loss", "metrics", "stitcher")
_HEAD_OPTIONAL_CALLABLES = ("visualize", "baseline", "official_key_map", "uses_matching", "matching_baseline")


def _check_fields(spec: Any) -> None:
    """Raise TypeError naming every field of `spec` whose type is plainly wrong (a minimal check)."""
    problems = [] if isinstance(spec.name, str) else [f"name must be a str, got {spec.name!r}"]
    if isinstance(spec, HeadSpec):
        problems += [f"{f} must be callable" for f in _HEAD_CALLABLES if not callable(getattr(spec, f))]
        problems += [
            f"{f} must be callable or None"
            for f in _HEAD_OPTIONAL_CALLABLES
            if getattr(spec, f) is not None and not callable(getattr(spec, f))
        ]
        # lists are accepted as well as the annotated tuples: plugins written that way work
        if not (
            isinstance(spec.outputs, tuple | list) and all(isinstance(o, OutputSpec) for o in spec.outputs)
        ):
            problems.append(f"outputs must be a tuple of OutputSpec, got {spec.outputs!r}")
        for f in ("targets", "inputs"):
            value = getattr(spec, f)
            if not (isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)):
                problems.append(f"{f} must be a tuple of str, got {value!r}")
        if not (isinstance(spec.config_model, type) and issubclass(spec.config_model, BaseModel)):
            problems.append(f"config_model must be a pydantic BaseModel subclass, got {spec.config_model!r}")
    if problems:
        raise TypeError(f"{type(spec).__name__} {spec.name!r}: " + "; ".join(problems))


def _describe(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


_HOST: PluginHost | None = None


def get_plugin_host() -> PluginHost:
    """The process-wide host, loading installed entry points on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost().load_entrypoints()
    return _HOST


def set_plugin_host(host: PluginHost | None) -> PluginHost | None:
    """Replace the process-wide host (None: rediscover on next use); returns the previous one."""
    global _HOST
    previous, _HOST = _HOST, host
    return previous
