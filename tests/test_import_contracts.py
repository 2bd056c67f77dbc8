"""The import directions of design.md ("Which room may use which") hold, and their check can fail.

The contracts live in ``pyproject.toml`` (``[tool.importlinter]``); ``lint-imports`` (PyPI
``import-linter``) checks them against the real import graph. To show the check is not vacuous,
each contract is broken on purpose in a copy of the packages with one planted module, and the
same command must then fail and name that contract.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contract_names() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return [contract["name"] for contract in config["contracts"]]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # lint-imports puts its working directory first on sys.path, so a copy there is what it reads.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _broken_section(output: str) -> str:
    return output.partition("Broken contracts")[2]


def test_the_code_keeps_every_import_contract() -> None:
    names = _contract_names()

    result = _lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(names)} kept, 0 broken." in result.stdout
    assert len(names) >= 9  # every rule of design.md's list, plus the cycle rule


#: (planted files, the contract that must then break)
PLANTS = {
    "safeguards import a task": (
        {"safeguards/_planted.py": "import tasks.base\n"},
        "safeguards use only models and the ground floor",
    ),
    "safeguards import the web framework": (
        {"safeguards/_planted.py": "import fastapi\n"},
        "safeguards use only models and the ground floor",
    ),
    "the ground floor imports a safeguard": (
        {"syncguard/_planted.py": "import safeguards.errors\n"},
        "The ground floor (syncguard but its cli) imports no room above it",
    ),
    "models import settings": (
        {"models/_planted.py": "import syncguard.settings\n"},
        "models know nothing of ours",
    ),
    "a provider client imports Celery": (
        {"providers/_planted.py": "import celery\n"},
        "providers are plain HTTP clients",
    ),
    "a provider client touches the database": (
        {"providers/_planted.py": "import syncguard.db\n"},
        "providers are plain HTTP clients",
    ),
    "a task imports the api": (
        {"tasks/_planted.py": "import api.errors\n"},
        "tasks never use the web side (api)",
    ),
    "the api calls a provider client itself": (
        {"api/_planted.py": "import providers.gmail\n"},
        "api reaches the providers only through tasks",
    ),
    "the api imports the command line": (
        {"api/_planted.py": "import syncguard.cli.main\n"},
        "Nothing imports the command line (syncguard.cli)",
    ),
    "a task imports the emulator": (
        {"tasks/_planted.py": "from providers.emulator import config\n"},
        "Only the command line imports the emulator",
    ),
    "two modules of one package import each other": (
        {
            "safeguards/_planted_a.py": "import safeguards._planted_b\n",
            "safeguards/_planted_b.py": "import safeguards._planted_a\n",
        },
        "No import cycle between the modules or subpackages of one package",
    ),
}


@pytest.fixture(scope="module")
def product_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product's packages and pyproject.toml, copied once into a scratch directory."""
    copy = tmp_path_factory.mktemp("product")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    skip = shutil.ignore_patterns("__pycache__", "static", "templates", "*.lua")
    for package in config["root_packages"]:
        shutil.copytree(ROOT / package, copy / package, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_import_breaks_its_contract(product_copy: Path, plant: str) -> None:
    files, contract = PLANTS[plant]
    for relative, source in files.items():
        (product_copy / relative).write_text(source)
    try:
        result = _lint_imports(product_copy)
    finally:
        for relative in files:
            (product_copy / relative).unlink()

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Contracts: {len(_contract_names()) - 1} kept, 1 broken." in result.stdout
    assert contract in _broken_section(result.stdout)
