"""The import layers (issue 12): models and data modules are independent siblings; litlab's
glue imports neither; only the top layer (train.py, litlab.cli, the figure callbacks that call a
model's own methods) may join them. Read from the source (``ast``), so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LAYER = {"litlab/cli"}  # command-line tools load models and data sets


def imported(path: Path) -> set[str]:
    """Top-level package names a file imports (absolute imports only)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("lightning_modules", {"datamodules"}), ("datamodules", {"lightning_modules"})],
)
def test_models_and_data_modules_do_not_import_each_other(folder: str, forbidden: set) -> None:
    offenders = {str(p.relative_to(ROOT)): imported(p) & forbidden for p in files(folder)}
    assert not {k: v for k, v in offenders.items() if v}


def test_litlab_glue_imports_neither_models_nor_data_modules() -> None:
    offenders = {}
    for path in files("litlab"):
        relative = path.relative_to(ROOT).as_posix()
        if any(relative.startswith(top) for top in TOP_LAYER):
            continue
        bad = imported(path) & {"lightning_modules", "datamodules", "train"}
        if bad:
            offenders[relative] = bad
    assert not offenders


def test_installed_top_level_names_are_litlabs_own() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert 'include = ["lightning_modules*", "datamodules*", "litlab*"]' in text
    assert "py-modules = []" in text  # train.py is a script, not an installed module "train"
    for name in ("callbacks", "analysis"):
        assert not (ROOT / name).exists(), f"{name}/ belongs under litlab/"
