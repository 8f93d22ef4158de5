"""The project's wiring: prefect.yaml entrypoints import, the CLI answers --help."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _deployments() -> list[dict]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]


@pytest.mark.parametrize("deployment", _deployments(), ids=lambda d: d["name"])
def test_every_entrypoint_imports_a_flow(deployment):
    from prefect import Flow

    path, name = deployment["entrypoint"].split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert isinstance(getattr(module, name), Flow)


@pytest.mark.parametrize("command", [[], ["demo"], ["ingest"], ["warehouse"], ["server"]])
def test_cli_help(command):
    out = subprocess.run(
        [sys.executable, "-m", "flows", *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "usage: python -m flows" in out.stdout


def test_cli_reports_a_missing_source_clearly(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "flows", "ingest", "--source", str(tmp_path / "missing"), "--no-dbt"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "DICOM_ETL_DEID_SECRET": "x", "PREFECT_API_URL": ""},
    )
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "--source" in out.stderr
