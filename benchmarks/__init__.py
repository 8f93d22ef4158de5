"""Benchmark programs and their reference loops (not imported by production code)."""
