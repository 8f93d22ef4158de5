"""Pixel compression as its own flow, so it can run as a deployment on another work pool.

``compress-dicom`` renders the preview JPEGs (and, as an option, lossless archive copies)
of images already in the lake's raw zone, named by their source keys. The ingest flow runs
it in process (``compression="local"``) or, like the Lambda mode of the pipeline this one
replaces, as the deployment ``compress-dicom/<name>`` on a separate work pool
(``compression="deployment"`` or a deployment name), one run per batch.

The de-identification secret never travels as a flow parameter: the remote run resolves
it from the settings block it is given (or its own environment).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture

from blocks.settings import PipelineConfig, resolve_config
from tasks.compat import end_flow_runs_promptly
from tasks.errors import CompressionError
from tasks.pixels.tasks import compress_remote, render_previews
from tasks.retries import BatchOutcome
from tasks.lake.storage import RAW_ZONE

end_flow_runs_promptly()  # each flow run ends as soon as it is final (tasks/compat.py)

DEFAULT_DEPLOYMENT = "compress-dicom/remote"


@flow(name="compress-dicom", persist_result=True, log_prints=True)
def compress_dicom(
    lake: str,
    batch_id: str,
    images: list[list[str]],
    ingested_at: datetime,
    settings_block: str | None = None,
    max_size: int = 512,
    quality: int = 85,
    frames: str = "middle",
    transcode: bool = False,
    workers: int | None = None,
    pixel_text: str | None = None,
) -> dict:
    """Render previews (and optionally lossless archive copies) of raw-zone images of one batch.

    ``images`` holds ``[source_key, SOPInstanceUID]`` pairs; the files are read from
    ``<lake>/raw/<source_key>``.
    """
    config = resolve_config(settings_block, lake=lake, pixel_text=pixel_text)
    raw = Path(config.lake) / RAW_ZONE
    outcome = BatchOutcome(batch_id=batch_id, pixel_images=[(str(raw / key), key, uid) for key, uid in images])
    done = render_previews(
        config.lake, outcome, ingested_at, config.secret, max_size, quality, frames, transcode, workers,
        pixel_text=config.pixel_text,
    )
    create_markdown_artifact(
        "\n".join(
            [f"# compress-dicom, batch {batch_id}", "", "| count | n |", "|---|---|"]
            + [f"| {k} | {v} |" for k, v in sorted(done.rows.items())]
        ),
        description="Previews rendered and files archived by this run",
    )
    return {"rows": done.rows, "errors": done.errors}


def compression_target(config: PipelineConfig) -> str:
    """``"local"`` or the deployment to run, from the run's ``compression`` setting.

    ``"deployment"`` means ``compress-dicom/remote``; any other value with a ``/`` names
    the deployment itself. A remote run reads the batch from the lake's raw zone, so it
    needs a lake on a filesystem the remote worker shares (a folder, a network mount).
    """
    mode, lake = (config.compression or "local").strip(), config.lake
    if mode == "local":
        return "local"
    if "://" in lake:
        msg = (
            f"compression={mode!r} needs a lake folder the compress worker can read; {lake!r} is not one. "
            "Use compression='local' with an object-store lake (the batch is rendered where it was downloaded)"
        )
        raise CompressionError(msg)
    if mode == "deployment":
        return DEFAULT_DEPLOYMENT
    if "/" in mode:
        return mode
    msg = (
        f"compression={mode!r} is not understood; use 'local', 'deployment' "
        f"(runs {DEFAULT_DEPLOYMENT}) or a deployment name 'compress-dicom/<name>'"
    )
    raise CompressionError(msg)


def submit_compression(
    target: str,
    config: PipelineConfig,
    extracted: PrefectFuture,
    ingested_at: datetime,
    bid: str,
    *,
    transcode: bool = False,
    staging_lake: str | None = None,
) -> PrefectFuture:
    """Submit the compression of one extracted batch, in process or on the deployment.

    In process, previews go to ``staging_lake`` (the batch's scratch copy of the lake,
    published with the batch's tables) when given, else straight to the lake. A remote
    run is given the name of the settings block this run's secret came from.
    """
    if target == "local":
        return render_previews.with_options(task_run_name=f"previews-{bid}").submit(
            staging_lake or config.lake, extracted, ingested_at, config.secret, transcode=transcode,
            pixel_text=config.pixel_text,
        )
    return compress_remote.with_options(task_run_name=f"compress-remote-{bid}").submit(
        target, str(Path(config.lake).resolve()), extracted, ingested_at, config.settings_block, transcode,
        pixel_text=config.pixel_text,
    )
