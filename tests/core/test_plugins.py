"""Plugin host: entry-point discovery, tolerant loading, duplicates, env selection, `l4p plugins`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from toy_heads import ToyPlugin, toy_spec

from l4p_framework import compose
from l4p_framework.errors import PluginError
from l4p_framework.hooks import hookimpl
from l4p_framework.plugins import PluginHost
from l4p_framework.testing import fresh_host

HERE = Path(__file__).parent


def make_distribution(root: Path, dist: str, version: str, module: str, source: str) -> None:
    """A fake installed distribution: `<dist>-<version>.dist-info` with an `l4p` entry point."""
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[l4p]\n{module} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    from toy_heads import ToyPlugin, toy_spec
    from l4p_framework.hooks import hookimpl

    @hookimpl
    def l4p_heads():
        return [toy_spec("alpha"), toy_spec("beta", layer=3)]
"""
BROKEN = """
    raise ImportError("this plugin needs a package that is not installed")
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    make_distribution(tmp_path, "l4p-head-good", "1.2.0", "good_plugin", GOOD)
    make_distribution(tmp_path, "l4p-head-broken", "0.0.1", "broken_plugin", BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(HERE))
    for var in ("L4P_STRICT_PLUGINS", "L4P_DISABLE_PLUGINS", "L4P_LOAD_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_entry_point_discovery_and_tolerant_failure(site):
    host = PluginHost().load_entrypoints()
    records = {r.name: r for r in host.records()}
    assert records["good_plugin"].status == "active"
    assert (
        records["good_plugin"].distribution == "l4p-head-good" and records["good_plugin"].version == "1.2.0"
    )
    assert records["good_plugin"].provides["heads"] == ("alpha", "beta")
    assert records["broken_plugin"].status == "failed"
    assert "needs a package that is not installed" in records["broken_plugin"].error
    assert host.get_head("alpha").distribution == "l4p-head-good"
    model = compose(["alpha", "beta"], host=host)  # the other heads still compose and run
    out = model(torch.rand(1, 3, 8, 64, 64))
    assert out["alpha"]["value"].shape == (1, 1, 8, 64, 64)


def test_l4p_plugins_json_lists_failed_plugin(site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(HERE)])}
    result = subprocess.run(
        [sys.executable, "-m", "l4p_framework.cli.main", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {r["plugin"]: r for r in json.loads(result.stdout)}
    assert (
        rows["broken_plugin"]["status"] == "failed"
        and rows["broken_plugin"]["distribution"] == "l4p-head-broken"
    )
    assert "ImportError" in rows["broken_plugin"]["error"]
    assert rows["good_plugin"]["status"] == "active" and rows["good_plugin"]["hooks"] == ["l4p_heads"]


def test_strict_mode_makes_plugin_errors_fatal(site, monkeypatch):
    monkeypatch.setenv("L4P_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken_plugin.*l4p-head-broken.*import failed"):
        PluginHost().load_entrypoints()


def test_disable_and_load_only(site, monkeypatch):
    monkeypatch.setenv("L4P_DISABLE_PLUGINS", "l4p-head-broken")
    host = PluginHost().load_entrypoints()
    assert {r.name: r.status for r in host.records()}["broken_plugin"] == "blocked"
    monkeypatch.delenv("L4P_DISABLE_PLUGINS")
    monkeypatch.setenv("L4P_LOAD_PLUGINS", "broken_plugin")
    host = PluginHost().load_entrypoints()
    statuses = {r.name: r.status for r in host.records()}
    assert statuses["good_plugin"] == "blocked" and statuses["broken_plugin"] == "failed"
    with pytest.raises(PluginError, match="no head named 'alpha'"):
        host.get_head("alpha")


def test_duplicate_head_names_name_both_distributions():
    host = PluginHost()
    host.register(ToyPlugin(toy_spec("depth")), name="one", distribution="l4p-head-depth")
    host.register(ToyPlugin(toy_spec("depth"), toy_spec("other")), name="two", distribution="acme-depth")
    with pytest.raises(PluginError) as info:
        host.get_head("depth")
    assert "l4p-head-depth" in str(info.value) and "acme-depth" in str(info.value)
    assert host.get_head("other").distribution == "acme-depth"  # the rest keeps working
    strict = PluginHost(strict=True)
    strict.register(ToyPlugin(toy_spec("depth")), name="one", distribution="a")
    strict.register(ToyPlugin(toy_spec("depth")), name="two", distribution="b")
    with pytest.raises(PluginError, match="registered by both"):
        strict.heads()


def test_misnamed_hook_is_caught_by_check_pending():
    class Typo:
        @hookimpl
        def l4p_head(self):  # should be l4p_heads
            return []

    host = fresh_host(Typo())
    (record,) = host.records()
    assert record.status == "failed" and "l4p_head" in record.error


def test_hook_returning_wrong_type_is_recorded():
    class Wrong:
        @hookimpl
        def l4p_heads(self):
            return [{"name": "not-a-spec"}]

    host = fresh_host(Wrong(), ToyPlugin(toy_spec("fine")))
    assert set(host.heads()) == {"fine"}
    failed = [r for r in host.records() if r.status == "failed"]
    assert len(failed) == 1 and "expected HeadSpec" in failed[0].error


def test_unknown_head_suggests_nearest():
    host = fresh_host(ToyPlugin(toy_spec("depth")))
    with pytest.raises(PluginError, match="did you mean 'depth'"):
        host.get_head("deptj")
