"""``python -m flows blocks register --env ENV``: save an environment's block documents."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def cmd_register(args: argparse.Namespace) -> int:
    from flows.cli import use_prefect_server

    use_prefect_server()
    from blocks.register import collect_values, register_environment
    from blocks.settings import local_secret

    values = collect_values(args.env, environ=os.environ, config_file=Path(args.config) if args.config else None)
    saved = register_environment(args.env, values, local_secret=local_secret() if args.env == "local" else None)
    for block in saved:
        shown = ", ".join(f"{k}={v}" for k, v in block.fields.items())
        print(f"saved {block.block_type:<24} {block.name:<24} {shown}")
    print(f"Runs use this environment with --settings-block dicom-settings-{args.env} "
          f"(or DICOM_ETL_SETTINGS_BLOCK=dicom-settings-{args.env}).")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    blocks = subparsers.add_parser("blocks", help="manage the Prefect block documents of an environment")
    sub = blocks.add_subparsers(dest="blocks_command", required=True)
    reg = sub.add_parser(
        "register",
        help="create or update the blocks of an environment from environment variables or a TOML file",
        description="Saves dicom-settings-ENV (and dicom-aws-ENV, dicom-provider-ENV, dicom-lake-ENV, "
        "dicom-snowflake-ENV when their values are given). Reads DICOM_ETL_SOURCE, DICOM_ETL_LAKE, "
        "DICOM_ETL_WAREHOUSE, DICOM_ETL_DEID_SECRET, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY, AWS_REGION, SNOWFLAKE_*; secrets are never printed.",
    )
    reg.add_argument("--env", required=True, choices=("local", "dev", "prod"), help="the environment to register")
    reg.add_argument("--config", default=None, help="TOML file with a table per environment ([dev] source=...)")
    reg.set_defaults(func=cmd_register)
