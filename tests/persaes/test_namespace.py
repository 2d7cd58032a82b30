"""The installed namespace: one top-level ``persaes`` (plus ``retouch``), nothing named ``cli`` or ``weights``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run_outside_checkout(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter whose import path holds the installed packages only."""
    return subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["cli", "weights"])
def test_no_top_level_cli_or_weights_is_installed(name: str, tmp_path: Path) -> None:
    result = _run_outside_checkout(f"import {name}", tmp_path)
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr


def test_cli_and_shipped_weights_come_from_the_persaes_namespace(tmp_path: Path) -> None:
    code = ("import persaes.cli.main, persaes.weights; from persaes.core.scorer import weights_dir; "
            "print(sorted(p.name for p in weights_dir().glob('*.safetensors')))")
    result = _run_outside_checkout(code, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "generic.safetensors" in result.stdout


def test_the_console_script_names_the_namespaced_cli() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "persaes"]
    assert script.value == "persaes.cli.main:main"
    assert callable(script.load())
