"""``python -m flows bench extract|previews|ingest``: one shape, options a variant's process gets too."""

from __future__ import annotations

import pytest

from benchmarks.ingest import variant_options
from flows.cli import build_parser


@pytest.mark.parametrize("benchmark", ["extract", "previews", "ingest"])
def test_every_benchmark_is_a_bench_subcommand(benchmark):
    args = build_parser().parse_args(["bench", benchmark])
    assert args.benchmark == benchmark and callable(args.func)


@pytest.mark.parametrize("old", ["bench-ingest", "bench-previews"])
def test_the_old_command_names_are_gone(old):
    with pytest.raises(SystemExit):
        build_parser().parse_args([old])


def test_a_variants_process_gets_the_options_that_shape_the_pipeline():
    args = build_parser().parse_args(["bench", "ingest", "--files", "10", "--batch-size", "20"])
    assert variant_options(args) == ["--batch-size", "20"]
    child = build_parser().parse_args(
        ["bench", "ingest", "--run-variant", "pipeline", "--source", "s", "--out", "o", *variant_options(args)]
    )
    assert child.batch_size == 20 and child.run_variant == "pipeline"
    assert variant_options(build_parser().parse_args(["bench", "ingest"])) == []
    with_dbt = build_parser().parse_args(["bench", "ingest", "--profile", "ct", "--dbt"])
    assert variant_options(with_dbt) == ["--dbt"]
    assert build_parser().parse_args(["bench", "ingest", "--run-variant", "pipeline", "--dbt"]).dbt
