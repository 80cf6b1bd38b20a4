"""The dependency check (`make deps-check`, deptry): what the code imports is declared, and only that.

deptry reads pyproject.toml and every module of host/, device/, tools/, firmware_tests/ and tests/;
a module imported from nowhere declared (or a declared package nothing imports) fails it. These
tests run it on the project and on scratch copies with one such mistake planted.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("host", "device", "tools", "firmware_tests", "tests")


def deptry(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deptry", "--no-ansi", "."], cwd=project,
                          capture_output=True, text=True, timeout=300)


def scratch_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", copy)
    for folder in SCANNED:
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_the_project_declares_exactly_what_it_imports():
    proc = deptry(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("folder", SCANNED)
@pytest.mark.parametrize("module, finding", [
    ("polars", "DEP001 'polars' imported but missing from the dependency definitions"),  # installed nowhere
    ("sklearn", "DEP003 'sklearn' imported but it is a transitive dependency"),  # here only as another's dependency
])
def test_an_undeclared_import_fails_the_check(tmp_path, folder, module, finding):
    copy = scratch_copy(tmp_path)
    (copy / folder / "planted.py").write_text(f'"""Planted by the test."""\n\nimport {module}\n')
    proc = deptry(copy)
    report = proc.stdout + proc.stderr  # deptry writes its findings to stderr
    assert proc.returncode != 0 and f"{folder}/planted.py" in report and finding in report, report


def test_a_declared_package_nothing_imports_fails_the_check(tmp_path):
    copy = scratch_copy(tmp_path)
    text = (copy / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(text.replace('"click>=8.1",', '"click>=8.1",\n    "six>=1.16",', 1))
    proc = deptry(copy)
    assert proc.returncode != 0 and "DEP002 'six' defined as a dependency but not used" in proc.stdout + proc.stderr
