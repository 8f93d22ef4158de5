"""Shared fixtures: sample DICOM folders, one real Prefect server per test session, one moto server per worker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flows.cli import SERVER_ENV  # imports no Prefect: the settings below still apply

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# the session's server runs as `python -m flows server` runs one (flows/cli.py SERVER_ENV)
for _name, _value in SERVER_ENV.items():
    os.environ.setdefault(_name, _value)
if os.environ.get("DICOM_ETL_TEST_PREFECT_API_URL"):
    # before Prefect is imported: its global settings (threads, subprocesses) see the server too
    os.environ["PREFECT_API_URL"] = os.environ["DICOM_ETL_TEST_PREFECT_API_URL"]

#: two workers on one Prefect server (``-n 2``): tests/parallel.py
pytest_plugins = ["tests.parallel"]

PYDICOM_TEST_FILES = Path(__import__("pydicom.data", fromlist=["x"]).__file__).parent / "test_files"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/unit is the unit tier (``-m unit``): pure code, no server."""
    for item in items:
        if item.nodeid.startswith("tests/unit/"):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server, once per session: the one both workers share, the one you
    keep running, or (``-n 0``) Prefect's test harness.

    ``DICOM_ETL_TEST_PREFECT_API_URL=http://127.0.0.1:4200/api`` points the tests at a
    server already up (``python -m flows server``) instead of starting one (20-30 s, minutes
    on a loaded machine); with ``-n 2`` the session sets it to the server it started.
    """
    if url := os.environ.get("DICOM_ETL_TEST_PREFECT_API_URL"):
        from tests.parallel import wait_for_server  # imported as a plugin first (assertions rewritten)

        wait_for_server(url)
        yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic multi-patient set (3 patients, CT/MR/CR/US/OT)."""
    from tasks.dicom.synthetic import generate_studies

    root = tmp_path_factory.mktemp("synthetic")
    generate_studies(root, patients=3, studies_per_patient=2, series_per_study=2, images_per_series=2, seed=11)
    return root


@pytest.fixture(scope="session")
def pydicom_dir(tmp_path_factory) -> Path:
    """pydicom's bundled test files: every odd kind of DICOM, and a few non-DICOM files."""
    root = tmp_path_factory.mktemp("pydicom")
    shutil.copytree(PYDICOM_TEST_FILES, root / "files")
    return root / "files"


@pytest.fixture
def secret() -> str:
    return "test-secret-not-for-production"


@pytest.fixture(scope="session")
def moto_s3():
    """moto's server over HTTP; the standard AWS_* variables point boto3 and s3fs at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"host": host, "port": port, "url": env["AWS_ENDPOINT_URL"]}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
