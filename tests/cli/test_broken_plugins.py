"""One bad plugin must not break the CLI: a failing subcommand, sys.exit at import and a malformed
HeadSpec each leave `l4p plugins` / `l4p heads` working and list the plugin as failed; strict mode
turns each into a one-line error with exit code 2."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from l4p_framework.cli.main import main
from l4p_framework.hooks import hookimpl
from l4p_framework.plugins import PluginHost, set_plugin_host
from l4p_framework.specs import SubcommandSpec
from l4p_framework.testing import fresh_host

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from toy_heads import ToyPlugin, toy_spec  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("L4P_STRICT_PLUGINS", "L4P_DISABLE_PLUGINS", "L4P_LOAD_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    previous = set_plugin_host(None)
    yield
    set_plugin_host(previous)


def _host(strict: bool = False, **plugins: object) -> PluginHost:
    """A fresh in-memory host with `plugins` registered under their keyword names."""
    host = fresh_host(strict=strict)
    for name, plugin in plugins.items():
        host.register(plugin, name=name)
    return host


def _plugins(capsys) -> dict[str, dict]:
    assert main(["plugins", "--json"]) == 0
    return {r["plugin"]: r for r in json.loads(capsys.readouterr().out)}


def _heads(capsys, tmp_path) -> set[str]:
    assert main(["heads", "--json", "--registry", str(tmp_path / "absent.yaml")]) == 0
    return {r["head"] for r in json.loads(capsys.readouterr().out)}


def _one_line_error(capsys, argv: list[str], *fragments: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("l4p: error: ") and "\n" not in err and "Traceback" not in err, err
    assert all(f in err for f in fragments), err


def _command(name: str, add_arguments) -> SubcommandSpec:
    return SubcommandSpec(name=name, help=f"{name} command", add_arguments=add_arguments, run=lambda args: 0)


class BadArgs:
    """A plugin whose subcommand's add_arguments raises."""

    @hookimpl
    def l4p_subcommands(self):
        def add_arguments(parser):
            raise ValueError("add_arguments exploded")

        return [_command("explode", add_arguments)]


class GoodArgs:
    @hookimpl
    def l4p_subcommands(self):
        return [_command("hello", lambda parser: parser.add_argument("--loud", action="store_true"))]


def test_failing_add_arguments_skips_only_that_command(capsys, tmp_path):
    set_plugin_host(_host(bad_args=BadArgs(), good_args=GoodArgs(), toy=ToyPlugin(toy_spec("alpha"))))
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("l4p: warning:") == 1 and "'explode'" in err and "bad_args" in err, err
    rows = {r["plugin"]: r for r in json.loads(out)}
    assert rows["bad_args"]["status"] == "failed"
    assert "'explode' add_arguments() failed: ValueError: add_arguments exploded" in rows["bad_args"]["error"]
    assert rows["good_args"]["status"] == "active"
    assert rows["good_args"]["provides"] == {"subcommands": ["hello"]}  # listed once after the recollect
    assert main(["hello", "--loud"]) == 0  # the other plugin's command still parses and runs
    assert _heads(capsys, tmp_path) == {"alpha"}
    with pytest.raises(SystemExit) as info:  # skipped: argparse says invalid choice
        main(["explode"])
    assert info.value.code == 2


def test_failing_add_arguments_is_fatal_in_strict_mode(capsys):
    set_plugin_host(_host(strict=True, bad_args=BadArgs(), good_args=GoodArgs()))
    _one_line_error(capsys, ["hello"], "bad_args", "explode", "add_arguments exploded", "L4P_STRICT_PLUGINS")


@pytest.fixture
def exiting_site(tmp_path, monkeypatch):
    """Installed distributions whose plugin modules call sys.exit(3) / raise KeyboardInterrupt at import."""
    for dist, module, body in (
        ("l4p-head-exits", "exiting_plugin", "import sys\nsys.exit(3)\n"),
        ("l4p-head-interrupts", "interrupting_plugin", "raise KeyboardInterrupt\n"),
    ):
        info = tmp_path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(f"[l4p]\n{module} = {module}\n")
        (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("L4P_LOAD_PLUGINS", "exiting_plugin,synth4d")
    return tmp_path


def test_sys_exit_at_import_is_a_failed_plugin(exiting_site, capsys, monkeypatch):
    rows = _plugins(capsys)  # the process-wide host loads the entry points itself
    assert rows["exiting_plugin"]["status"] == "failed"
    assert rows["exiting_plugin"]["distribution"] == "l4p-head-exits"
    assert "import failed: SystemExit: 3" in rows["exiting_plugin"]["error"]
    assert rows["synth4d"]["status"] == "active"
    assert main(["encoder", "info", "tiny", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["preset"] == "tiny"
    monkeypatch.setenv("L4P_LOAD_PLUGINS", "interrupting_plugin")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C is never swallowed as a plugin failure
        PluginHost().load_entrypoints()


def test_sys_exit_at_import_is_fatal_in_strict_mode(exiting_site, capsys, monkeypatch):
    monkeypatch.setenv("L4P_STRICT_PLUGINS", "1")
    _one_line_error(capsys, ["plugins"], "exiting_plugin", "l4p-head-exits", "SystemExit: 3")


@pytest.mark.parametrize(
    "field, value",
    [("outputs", "x"), ("layers", None), ("targets", "depth"), ("config_model", dict), ("name", 3)],
)
def test_malformed_head_spec_is_a_failed_plugin(field, value, capsys, tmp_path):
    bad = ToyPlugin(dataclasses.replace(toy_spec("bad"), **{field: value}))
    set_plugin_host(_host(bad=bad, good=ToyPlugin(toy_spec("alpha"))))
    rows = _plugins(capsys)
    assert rows["bad"]["status"] == "failed" and "l4p_heads() failed: TypeError" in rows["bad"]["error"]
    assert f"{field} must be" in rows["bad"]["error"]
    assert rows["good"]["status"] == "active" and rows["good"]["provides"] == {"heads": ["alpha"]}
    assert main(["plugins"]) == 0 and "failed" in capsys.readouterr().out
    assert _heads(capsys, tmp_path) == {"alpha"}


def test_malformed_head_spec_is_fatal_in_strict_mode(capsys, tmp_path):
    bad = ToyPlugin(dataclasses.replace(toy_spec("bad"), outputs="x"))
    set_plugin_host(_host(strict=True, bad=bad))
    _one_line_error(
        capsys, ["heads", "--registry", str(tmp_path / "absent.yaml")], "'bad'", "outputs must be"
    )
