"""`l4p new-head NAME`: name checks with one-line errors, and a generated package that installs, passes
its own generated tests and trains with `l4p-train-head`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from l4p_framework.cli.main import main
from l4p_framework.plugins import set_plugin_host
from l4p_framework.scaffold import FILES, ScaffoldError, new_head, render, suggest_name, validate_head_name
from l4p_framework.testing import fresh_host

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from toy_heads import ToyPlugin, toy_spec  # noqa: E402


@pytest.fixture
def toy_host():
    """A process-wide host with one in-memory head `taken` (and nothing else)."""
    previous = set_plugin_host(fresh_host(ToyPlugin(toy_spec("taken"))))
    yield
    set_plugin_host(previous)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("My-Task", r"'My-Task' is not lower_snake.*e\.g\. 'my_task'"),
        ("myTask", r"not lower_snake.*e\.g\. 'my_task'"),
        ("9lives", r"not lower_snake.*starting with a letter.*e\.g\. 'head_9lives'"),
        ("_private", "not lower_snake"),
        ("two__underscores", "not lower_snake"),
        ("trailing_", "not lower_snake"),
        ("with space", r"not lower_snake.*e\.g\. 'with_space'"),
        ("class", "is a Python keyword"),
        ("", "not lower_snake"),
    ],
)
def test_invalid_names_are_refused_with_one_line(tmp_path, capsys, toy_host, name, expected):
    code = main(["new-head", name, "--dest", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("l4p: error: head name ") and "Traceback" not in err
    assert re.search(expected, err), err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_existing_folder_and_taken_name_are_refused(tmp_path, capsys, toy_host):
    (tmp_path / "mine").mkdir()
    assert main(["new-head", "mine", "--dest", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["new-head", "taken", "--dest", str(tmp_path)]) == 2
    assert "already provided by the installed plugin" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    with pytest.raises(ScaffoldError, match="already exists"):
        new_head("mine", tmp_path, check_installed=False)


def test_names_templates_and_rendering():
    assert validate_head_name("surface_normals_2") == "surface_normals_2"
    assert suggest_name("SurfaceNormals v2") == "surface_normals_v2"
    assert render("{{a}}-{{b}}", {"a": "x", "b": "y"}) == "x-y"
    with pytest.raises(ScaffoldError, match=r"\{\{c\}\} has no value"):
        render("{{c}}", {"a": "x"})
    shipped = {p.name for p in (resources.files("l4p_framework") / "templates" / "head").iterdir()}
    assert {t for t in FILES.values() if t} == shipped


def test_generated_package_files_and_quoting(tmp_path, toy_host):
    root = new_head("water_level", tmp_path, description='Water "level" in m \\ metres')
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [
        "README.md",
        "pyproject.toml",
        "src/l4p_head_water_level/__init__.py",
        "src/l4p_head_water_level/head.py",
        "src/l4p_head_water_level/plugin.py",
        "src/l4p_head_water_level/py.typed",
        "tests/test_water_level.py",
    ]
    pyproject = (root / "pyproject.toml").read_text()
    assert 'name = "l4p-head-water-level"' in pyproject
    assert '[project.entry-points.l4p]\nwater_level = "l4p_head_water_level.plugin"' in pyproject
    assert "{{" not in "".join(p.read_text() for p in root.rglob("*") if p.is_file())
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    assert tomllib.loads(pyproject)["project"]["description"] == 'Water "level" in m \\ metres'
    source = (root / "src/l4p_head_water_level/head.py").read_text()
    compile(source, "head.py", "exec")  # valid Python whatever the description holds
    assert 'DESCRIPTION = "Water \\"level\\" in m \\\\ metres"' in source
    assert "class WaterLevelConfig(DenseHeadConfig)" in source


def test_generated_plugin_installs_passes_its_tests_and_trains(tmp_path, capsys):
    """pip install -e (into this venv, --no-deps), its generated pytest suite, 1 training step, uninstall."""
    name = f"scaffold_probe_{os.getpid()}"
    assert main(["new-head", name, "--dest", str(tmp_path), "--description", "a probe head"]) == 0
    root = tmp_path / name
    assert f"pip install -e {root}" in capsys.readouterr().out
    dist = "l4p-head-" + name.replace("_", "-")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("L4P_LOAD_PLUGINS", None)
    pip = [sys.executable, "-m", "pip"]
    install = subprocess.run(
        [*pip, "install", "-q", "-e", str(root), "--no-deps", "--no-build-isolation"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    try:
        assert install.returncode == 0, install.stdout + install.stderr
        tests = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
            cwd=root, capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
        assert "6 passed" in tests.stdout, tests.stdout[-2000:]
        registry = tmp_path / "bundle" / "registry.yaml"
        registry.parent.mkdir()
        registry.write_text("encoder:\n  preset: tiny\n")
        fast = ["steps=1", "batch_size=1", "warmup_steps=0", "checkpoint_every=0", "eval_batches=1"]
        fast += ["progress=false", "data.train_clips=1", "data.options.num_queries=4"]
        train = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "l4p-train-head"), "--plugin", name,
             "--registry", str(registry), *fast],
            cwd=registry.parent, capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
        assert (registry.parent / "weights" / f"{name}.safetensors").is_file()
        text = registry.read_text()
        assert f"plugin: {dist}" in text and "mae:" in text
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", dist], capture_output=True, timeout=300)
