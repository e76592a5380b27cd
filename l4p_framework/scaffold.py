"""`l4p new-head NAME`: generate a working head-plugin package from the templates in `templates/head/`.

The package is the smallest complete plugin (the same layout as `plugins/normals`):

    NAME/
      pyproject.toml                 distribution l4p-head-NAME, entry point `[project.entry-points.l4p] NAME`
      README.md                      what it is, install / test / train / evaluate / use
      src/l4p_head_NAME/__init__.py
      src/l4p_head_NAME/head.py      config model, decoder on DenseHead, loss, metrics, baseline, HeadSpec
      src/l4p_head_NAME/plugin.py    the `l4p_heads` hook
      tests/test_NAME.py             contract test (l4p_framework.testing.assert_head_contract) and more

It works as generated: a dense head regressing synth4d's depth with an L1 loss, for the author to turn
into their task.
"""

from __future__ import annotations

import keyword
import os
import re
from importlib import resources
from pathlib import Path

from .errors import L4PError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
"""lower_snake identifiers: a letter first, then letters / digits, words joined by single underscores."""

FILES: dict[str, str] = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    "src/{package}/__init__.py": "__init__.py.tmpl",
    "src/{package}/head.py": "head.py.tmpl",
    "src/{package}/plugin.py": "plugin.py.tmpl",
    "src/{package}/py.typed": None,
    "tests/test_{name}.py": "test_head.py.tmpl",
}
"""Generated file (relative to the package folder) -> template in l4p_framework/templates/head (None: empty)."""


class ScaffoldError(L4PError):
    """`l4p new-head` cannot generate the package (invalid name, folder exists, name taken)."""


def suggest_name(text: str) -> str:
    """A lower_snake version of `text` ("My-Task 2" -> "my_task_2"), for error messages."""
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text).lower())
    name = "_".join(words)
    return name if not name or name[0].isalpha() else "head_" + name


def validate_head_name(name: str) -> str:
    """`name` if it is a valid new head name (lower_snake identifier, not a Python keyword); else ScaffoldError."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        hint = suggest_name(name) if isinstance(name, str) else ""
        hint = f"; e.g. {hint!r}" if hint and hint != name and NAME_PATTERN.fullmatch(hint) else ""
        reason = (
            "a Python keyword" if isinstance(name, str) and keyword.iskeyword(name) else "not lower_snake"
        )
        raise ScaffoldError(
            f"head name {name!r} is {reason}: use a lower_snake identifier (lowercase letters, digits and "
            f"single underscores, starting with a letter){hint}"
        )
    return name


def names(name: str, description: str | None = None) -> dict[str, str]:
    """The template variables of head `name`."""
    from . import __version__

    text = " ".join(
        (description or f"the {name} head: a dense per-pixel map from frozen video tokens").split()
    )
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return {
        "name": name,
        "package": f"l4p_head_{name}",
        "distribution": "l4p-head-" + name.replace("_", "-"),
        "Class": "".join(w.capitalize() for w in name.split("_")),
        "description": escaped,
        "description_text": text,
        "framework_version": __version__,
    }


def render(template: str, variables: dict[str, str]) -> str:
    """Replace every `{{key}}` of `template` by variables[key]; an unknown key is an error."""

    def replace(match: re.Match) -> str:
        key = match.group(1)
        if key not in variables:
            raise ScaffoldError(
                f"template placeholder {{{{{key}}}}} has no value (known: {sorted(variables)})"
            )
        return variables[key]

    return re.sub(r"\{\{(\w+)\}\}", replace, template)


def _template(name: str) -> str:
    return (resources.files("l4p_framework") / "templates" / "head" / name).read_text(encoding="utf-8")


def new_head(
    name: str,
    dest: str | os.PathLike = ".",
    *,
    description: str | None = None,
    check_installed: bool = True,
) -> Path:
    """Generate the plugin package of head `name` in the new folder `dest/name`; returns that folder.

    Raises ScaffoldError for an invalid name, an existing `dest/name`, or (with `check_installed`) a
    head name that an installed plugin already registers (two plugins cannot share a head name).
    Nothing is written unless every check passes.
    """
    validate_head_name(name)
    root = Path(dest) / name
    if root.exists():
        raise ScaffoldError(
            f"{root} already exists; pick another head name or another parent folder (--dest DIR)"
        )
    if check_installed:
        from .plugins import get_plugin_host

        installed = get_plugin_host().heads()
        if name in installed:
            raise ScaffoldError(
                f"a head named {name!r} is already provided by the installed plugin "
                f"{installed[name].distribution!r}; two plugins cannot register the same head name: pick "
                "another name"
            )
    variables = names(name, description)
    rendered = {
        Path(path.format(**variables)): render(_template(template), variables) if template else ""
        for path, template in FILES.items()
    }
    for path, text in rendered.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root


__all__ = ["FILES", "ScaffoldError", "new_head", "render", "suggest_name", "validate_head_name"]
