"""Untrusted registry YAML: malformed files, Python tags, alias bombs and ${...} interpolations give
one-line RegistryErrors naming the file, never a traceback, a constructed object or an env read."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from l4p_framework.cli.main import main
from l4p_framework.config import MAX_YAML_NODES, load_yaml
from l4p_framework.errors import ConfigError, RegistryError
from l4p_framework.registry import load_registry

REPO_REGISTRY = Path(__file__).resolve().parents[2] / "registry.yaml"


def _bomb(levels: int = 9, width: int = 9) -> str:
    """A 'billion laughs' document: `width`**`levels` values from a few hundred bytes."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\nencoder: {preset: tiny}\n"


CASES = {
    "not-yaml": ("encoder: {preset: tiny\nheads: [\n", ["not valid YAML", "line 2"]),
    "python-tag": (
        'encoder: !!python/object/apply:os.system ["touch {sentinel}"]\n',
        ["!!python/object/apply:os.system", "remove it"],
    ),
    "alias-bomb": (_bomb(), ["aliases expand", str(MAX_YAML_NODES)]),
    "recursive-alias": (
        "loop: &a [1, *a]\nencoder: {preset: tiny}\n",
        ["alias *a refers to a node containing it"],
    ),
    "env-interpolation": (
        "encoder: {preset: '${oc.env:L4P_TEST_SECRET}'}\n",
        ["encoder.preset", "interpolation", "${...}"],
    ),
    "key-interpolation": (
        "encoder: {preset: tiny, seed: '${window.stride}'}\n",
        ["encoder.seed", "interpolation"],
    ),
}


@pytest.fixture
def write_case(tmp_path, monkeypatch):
    monkeypatch.setenv("L4P_TEST_SECRET", "s3cret-value")

    def write(case: str) -> tuple[Path, list[str], Path]:
        text, words = CASES[case]
        sentinel = tmp_path / "SENTINEL"
        path = tmp_path / "registry.yaml"
        path.write_text(text.replace("{sentinel}", str(sentinel)))
        return path, words, sentinel

    return write


@pytest.mark.parametrize("case", list(CASES))
def test_load_registry_refuses_untrusted_yaml(write_case, case):
    path, words, sentinel = write_case(case)
    start = time.perf_counter()
    with pytest.raises(RegistryError) as e:
        load_registry(path)
    elapsed = time.perf_counter() - start
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    assert "s3cret-value" not in msg  # the environment was never read
    assert not sentinel.exists()
    assert elapsed < 10, elapsed  # a hang guard: the bomb expands to 9**9 values if built


@pytest.mark.parametrize("case", list(CASES))
def test_cli_registry_validate_gives_one_error_line(write_case, case, capsys):
    path, words, _ = write_case(case)
    assert main(["registry", "validate", "--registry", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("l4p: error:")]
    assert len(lines) == 1 and str(path) in lines[0] and words[0] in lines[0], err
    assert "Traceback" not in err


def test_bombs_are_refused_in_any_config_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(_bomb(levels=12, width=12))
    with pytest.raises(ConfigError, match="aliases expand"):
        load_yaml(path)


def test_plain_registries_still_load(tmp_path):
    """Anchors and aliases within the limit, the !!str tag and the committed registry are fine."""
    path = tmp_path / "registry.yaml"
    path.write_text(
        "encoder: {preset: !!str tiny}\n"
        "heads:\n"
        "  a: &head {plugin: l4p-head-a, params: {layers: [1, 2]}}\n"
        "  b: *head\n"
    )
    reg = load_registry(path).registry
    assert reg.encoder.preset == "tiny" and reg.heads["b"].params == {"layers": [1, 2]}
    assert load_registry(REPO_REGISTRY).registry.heads  # the repository's registry.yaml
    # interpolation stays available to configs that ask for it
    cfg = tmp_path / "run.yaml"
    cfg.write_text("a: 3\nb: ${a}\n")
    assert load_yaml(cfg) == {"a": 3, "b": 3}
