"""Shared fixtures: sample DICOM folders, and one real Prefect server per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

PYDICOM_TEST_FILES = Path(__import__("pydicom.data", fromlist=["x"]).__file__).parent / "test_files"


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect API server (Prefect's test harness), started once per session.

    ``DICOM_ETL_TEST_PREFECT_API_URL`` names a server already running instead (to watch the
    runs in its UI, or on a machine too loaded to start one in time).
    """
    running = os.environ.get("DICOM_ETL_TEST_PREFECT_API_URL")
    if running:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: running}):
            yield
        return
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
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
