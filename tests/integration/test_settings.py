"""The configuration resolved from a saved settings block, and the CLI checking it before a run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.runs import flow_run_into

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "settings-secret-never-shown"


def _save(name: str, **fields) -> None:
    from blocks.settings import DicomPipelineSettings

    DicomPipelineSettings(deid_secret=SecretStr(SECRET), **fields).save(name, overwrite=True)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    from prefect.settings import PREFECT_API_URL

    environ = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_ETL_")}
    environ |= {"PREFECT_API_URL": PREFECT_API_URL.value(), **(env or {})}
    return subprocess.run([sys.executable, "-m", "flows", *args], cwd=ROOT, env=environ, capture_output=True,
                          text=True, timeout=600, check=False)


def test_a_saved_block_sits_between_parameters_and_the_environment(prefect_server, tmp_path, monkeypatch):
    from blocks.settings import resolve_config
    from tasks.errors import ConfigError

    _save("settings-precedence", lake=str(tmp_path / "block-lake"), batch_size=5)
    monkeypatch.setenv("DICOM_ETL_LAKE", "/env/lake")
    monkeypatch.setenv("DICOM_ETL_SETTINGS_BLOCK", "settings-precedence")
    config = resolve_config(warehouse=str(tmp_path / "param.duckdb"))
    assert (config.lake, config.batch_size, config.settings_block) == (str(tmp_path / "block-lake"), 5, "settings-precedence")
    assert config.warehouse == str(tmp_path / "param.duckdb") and config.secret == SECRET
    with pytest.raises(ConfigError, match="no DicomPipelineSettings block named 'no-such-settings'"):
        resolve_config("no-such-settings")


def test_a_block_saved_with_fields_since_removed_still_resolves(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentUpdate

    from blocks.settings import DicomPipelineSettings, resolve_config

    # provider_bucket_block and lake_bucket_block were fields once: documents saved then still hold them
    # (save() writes only the fields the class has, so they are put into the stored document by hand)
    _save("settings-old-fields", lake=str(tmp_path / "lake"))
    old = {"provider_bucket_block": "dicom-provider-dev", "lake_bucket_block": "dicom-lake-dev"}
    with get_client(sync_client=True) as client:
        doc = client.read_block_document_by_name("settings-old-fields", block_type_slug="dicom-pipeline-settings")
        client.update_block_document(doc.id, BlockDocumentUpdate(data=old))
    assert DicomPipelineSettings.load("settings-old-fields").provider_bucket_block == "dicom-provider-dev"
    config = resolve_config("settings-old-fields")
    assert (config.lake, config.secret) == (str(tmp_path / "lake"), SECRET)


def test_cli_checks_the_blocks_source_folder_not_the_default(prefect_server, tmp_path):
    missing = tmp_path / "provider" / "incoming"
    _save("settings-missing-folder", source=str(missing), lake=str(tmp_path / "lake"))
    done = _cli("ingest", "--settings-block", "settings-missing-folder", "--no-dbt")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"source folder '{missing}' (from the settings block 'settings-missing-folder') does not exist" in done.stderr
    assert "data/incoming" not in done.stderr
    assert not (tmp_path / "lake").exists()


def test_cli_checks_the_blocks_s3_source(prefect_server, moto_s3, tmp_path):
    _save("settings-missing-bucket", source="s3://no-such-provider-bucket/in", lake=str(tmp_path / "lake"))
    done = _cli("ingest", "--settings-block", "settings-missing-bucket", "--no-dbt")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "listing the source s3://no-such-provider-bucket/in (from the settings block" in done.stderr
    assert "NoSuchBucket" in done.stderr


def test_cli_ingests_from_the_blocks_source_and_records_no_secret(prefect_server, synthetic_dir, tmp_path):
    source = tmp_path / "incoming"
    source.mkdir()
    for path in sorted(p for p in synthetic_dir.rglob("*") if p.is_file())[:2]:
        shutil.copy(path, source / path.name)
    lake = tmp_path / "lake"
    _save("settings-folder", source=str(source), lake=str(lake))
    done = _cli("ingest", "--settings-block", "settings-folder", "--no-dbt", "--no-previews")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (lake / "raw").iterdir()) == sorted(p.name for p in source.iterdir())

    recorded = flow_run_into(lake).parameters
    assert recorded["config"]["settings_block"] == "settings-folder"
    assert recorded["config"]["lake"] == str(lake)
    assert SECRET not in str(recorded)
