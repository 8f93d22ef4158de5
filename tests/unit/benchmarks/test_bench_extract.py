from __future__ import annotations

from benchmarks.extract import run_benchmark
from flows.cli import build_parser


def test_benchmark_measures_every_contender_and_writes_the_tables(tmp_path):
    result = run_benchmark(tmp_path, files=40, batch_size=20, repeats=1)
    assert result.files == 40
    assert result.bare_loop > 0 and result.serial > 0 and result.parallel is None
    assert "ratio" in result.report()
    written = sorted(p.parent.parent.name for p in (tmp_path / "lake-1-0" / "tables").rglob("*.parquet"))
    assert written.count("images") == 2  # one file per table per batch


def test_bench_extract_has_help():
    args = build_parser().parse_args(["bench", "extract", "--files", "10", "--workers", "1"])
    assert args.files == 10 and args.workers == 1 and callable(args.func)
