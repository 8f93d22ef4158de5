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


def _triggers() -> list[tuple[str, dict]]:
    return [(d["name"], t) for d in _deployments() for t in d.get("triggers", [])]


@pytest.mark.parametrize(("deployment", "spec"), _triggers(), ids=lambda x: x if isinstance(x, str) else x.get("name"))
def test_every_trigger_validates_and_templates_only_flow_parameters(deployment, spec):
    """What `prefect deploy` does with a trigger, short of the server; parameters exist on the flow."""
    import copy

    from prefect.cli.deploy._triggers import _initialize_deployment_triggers

    from tasks.events.notifications import OBJECTS_ARRIVED

    [trigger] = _initialize_deployment_triggers(deployment, [copy.deepcopy(spec)])
    assert trigger.expect, "a trigger names the events it expects"
    path, name = next(d for d in _deployments() if d["name"] == deployment)["entrypoint"].split(":")
    flow = getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)
    accepted = set(flow.parameters.properties)
    assert set(trigger.parameters or {}) <= accepted
    from flows.reporting import INGEST_COMPLETED

    emitted = {OBJECTS_ARRIVED, INGEST_COMPLETED}
    assert set(trigger.expect) <= emitted, "triggers match only events this project emits"


def test_every_deployment_is_on_a_pool_that_create_pools_makes():
    script = (ROOT / "deployments" / "create-pools.sh").read_text()
    for deployment in _deployments():
        assert deployment["work_pool"]["name"] in script, deployment["name"]


def test_work_pool_templates_are_valid_json_with_variables():
    import json

    for path in sorted((ROOT / "deployments" / "work-pools").glob("*.json")):
        template = json.loads(path.read_text())
        assert {"job_configuration", "variables"} <= set(template), path.name
        assert "env" in template["variables"]["properties"], path.name


def test_python_m_flows_answers_help():
    """The entry point itself, in a real process; each command's --help runs in process below."""
    out = subprocess.run([sys.executable, "-m", "flows", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage: python -m flows" in out.stdout


@pytest.mark.parametrize("command", [["demo"], ["ingest"], ["warehouse"], ["server"], ["bridge"], ["watch"]])
def test_cli_help(command, capsys):
    from tests.cli import run_main

    code, out, err = run_main([*command, "--help"], capsys)
    assert code == 0, err
    assert "usage: python -m flows" in out
