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


class _HelpWithVariables(argparse.Action):
    """``--help`` that lists every variable read; blocks.register is imported only when asked (it imports Prefect)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from blocks.register import variables_help

        parser.epilog = variables_help()
        parser.print_help()
        parser.exit()


def register(subparsers: argparse._SubParsersAction) -> None:
    blocks = subparsers.add_parser("blocks", help="manage the Prefect block documents of an environment")
    sub = blocks.add_subparsers(dest="blocks_command", required=True)
    reg = sub.add_parser(
        "register",
        help="create or update the blocks of an environment from environment variables or a TOML file",
        description="Saves dicom-settings-ENV (and dicom-aws-ENV, dicom-provider-ENV, dicom-lake-ENV, "
        "dicom-snowflake-ENV when their values are given); secrets are never printed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    reg.add_argument("-h", "--help", action=_HelpWithVariables, help="show this help message and exit")
    reg.add_argument("--env", required=True, choices=("local", "dev", "prod"), help="the environment to register")
    reg.add_argument("--config", default=None, help="TOML file with a table per environment ([dev] source=...)")
    reg.set_defaults(func=cmd_register)
