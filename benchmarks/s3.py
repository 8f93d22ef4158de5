"""The S3 path at cloud latency against the local path: the same files, side by side, in one run.

``run_side_by_side`` ingests one corpus twice with ``python -m flows ingest --no-dbt``, as a
user runs it: folder -> folder, then ``s3://provider`` -> ``s3://lake`` on moto's server
behind a proxy that holds every request ``latency_ms`` before forwarding it (a cloud
region's round trip). moto and the proxy run in a process of their own
(``python -m benchmarks.s3 --serve``), so their Python does not share the ingest's
interpreter; they still share the machine's cores, which a real S3 does not. The proxy
counts the requests of the S3 run: requests per file is printed beside files/s.

Each variant runs in its own process; the seconds are from the start of that process's
``flows.cli`` import to the end of the run (as ``bench ingest`` measures its pipeline
variant), and the load average is printed before and after each.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The child process that times one ingest: flows.cli imported and run in the code root given.
_TIMED_INGEST = """
import json, resource, sys, time
started = time.perf_counter()
from flows.cli import main
code = main(sys.argv[1:])
seconds = time.perf_counter() - started
own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
print(json.dumps({"code": code, "seconds": seconds, "peak_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024, "cpu_s": cpu}))
"""

#: The AWS environment of the S3 run (moto accepts any credentials).
BENCH_ENV = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
             "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Figures:
    """One variant's run."""

    label: str
    files: int
    seconds: float
    peak_rss_mb: float
    load_before: float
    load_after: float
    cpu_s: float
    requests: int | None = None
    by_method: dict[str, int] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    def line(self) -> str:
        text = (f"{self.label:<18} {self.seconds:7.1f} s {self.files_per_s:8.1f} files/s  peak RSS {self.peak_rss_mb:6.0f} MB  "
                f"CPU {self.cpu_s:5.1f} s  load {self.load_before:.1f} -> {self.load_after:.1f}")
        if self.requests is not None:
            methods = " ".join(f"{m} {n / self.files:.2f}" for m, n in sorted(self.by_method.items()))
            text += f"\n{'':<18} {self.requests} S3 requests, {self.requests / self.files:.2f} per file ({methods})"
        return text


class StandIn:
    """moto's S3 server and the latency proxy in a child process; request counts on demand."""

    def __init__(self, latency_ms: float, *, cores: set[int] | None = None) -> None:
        cmd = [sys.executable, "-m", "benchmarks.s3", "--serve", str(latency_ms)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=_root(),
                                     preexec_fn=_pinned(cores))
        ready = json.loads(self.proc.stdout.readline())
        self.moto_url, self.proxy_url = ready["moto"], ready["proxy"]

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def serve(latency_ms: float) -> None:
    """Child process: moto behind the proxy; answers ``counts`` and ``reset`` on stdin, one JSON line each."""
    from moto.server import ThreadedMotoServer

    from tests.integration.fault_proxy import FaultProxy

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with FaultProxy((host, port), delay_ms=latency_ms) as proxy:
        print(json.dumps({"moto": f"http://{host}:{port}", "proxy": proxy.url}), flush=True)
        for command in sys.stdin:
            if command.strip() == "reset":
                proxy.reset_counts()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(json.dumps({"requests": proxy.requests, "by_method": proxy.by_method,
                              "cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
    server.stop()


def _root() -> Path:
    return Path(__file__).resolve().parents[1]


def seed_provider(endpoint: str, corpus: Path, bucket: str, prefix: str) -> int:
    """Upload a corpus to ``s3://bucket/prefix`` straight to moto (not through the proxy); return the files."""
    from tasks.lake.s3 import S3Access, make_s3_client
    from tasks.lake.transfers import upload_s3_objects

    client = make_s3_client(S3Access(endpoint_url=endpoint, region=BENCH_ENV["AWS_REGION"], access_key_id="bench",
                                     secret_access_key="bench", max_concurrency=16))
    for name in (bucket, "lake"):
        client.create_bucket(Bucket=name)
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    return upload_s3_objects(client, [(p, f"{prefix}{p.relative_to(corpus).as_posix()}") for p in files], bucket,
                             max_concurrency=16)


def _pinned(cores: set[int] | None):  # noqa: ANN202 - a preexec_fn or None
    """A child's CPU affinity (its own children inherit it), or None to leave it."""
    return None if cores is None else (lambda: os.sched_setaffinity(0, cores))


def timed_ingest(
    label: str, files: int, argv: list[str], env: Mapping[str, str], *, code_root: Path, cores: set[int] | None = None
) -> Figures:
    """Run ``python -m flows ingest`` with ``argv`` in a process of its own (on ``cores``, if given); its figures."""
    load_before = os.getloadavg()[0]
    done = subprocess.run([sys.executable, "-c", _TIMED_INGEST, "ingest", *argv], env=dict(env), cwd=code_root,
                          capture_output=True, text=True, check=False, preexec_fn=_pinned(cores))
    if done.returncode != 0 or not done.stdout.strip():
        print(done.stdout[-3000:], done.stderr[-5000:], file=sys.stderr)
        msg = f"the {label} ingest failed (its output is above)"
        raise RuntimeError(msg)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Figures(label, files, result["seconds"], result["peak_rss_mb"], load_before, os.getloadavg()[0], result["cpu_s"])


def run_side_by_side(
    corpus: Path,
    work: Path,
    *,
    latency_ms: float,
    env: Mapping[str, str],
    batch_size: int | None = None,
    max_concurrency: int | None = None,
    code_root: Path | None = None,
    split_cores: bool = False,
) -> tuple[Figures, Figures, dict]:
    """Ingest ``corpus`` folder -> folder, then s3:// -> s3:// at ``latency_ms``; return both figures.

    Parameters
    ----------
    corpus : Path
        The files (e.g. ``synth --profile small``).
    work : Path
        Where the local lake and the warehouse files go.
    latency_ms : float
        Held per S3 request by the proxy.
    env : mapping
        Environment of the ingest processes (``PREFECT_API_URL`` of a running server).
    batch_size, max_concurrency : int, optional
        ``--batch-size`` of both runs; ``s3_max_concurrency`` of the S3 run.
    code_root : Path, optional
        The checkout whose ``flows`` runs (another worktree, to compare with a former version).
    split_cores : bool
        Both ingests on core 0, moto and the proxy on core 1: the stand-in, which a real S3
        runs on its own machines, then takes none of the ingest's CPU (both paths get one core).

    Returns
    -------
    local, s3, stand_in : Figures, Figures, dict
        ``stand_in`` holds the CPU seconds moto and the proxy spent in the S3 run.
    """
    code_root = code_root or _root()
    ingest_cores, stand_in_cores = ({0}, {1}) if split_cores else (None, None)
    files = sum(1 for p in corpus.rglob("*") if p.is_file())
    extra = ["--no-dbt", *(["--batch-size", str(batch_size)] if batch_size else [])]
    local = timed_ingest(
        "folder -> folder", files,
        ["--source", str(corpus), "--lake", str(work / "lake"), "--warehouse", str(work / "local.duckdb"), *extra],
        env, code_root=code_root, cores=ingest_cores,
    )
    stand_in = StandIn(latency_ms, cores=stand_in_cores)
    try:
        seed_provider(stand_in.moto_url, corpus, "provider", "incoming/")
        s3_env = {**env, **BENCH_ENV, "AWS_ENDPOINT_URL": stand_in.proxy_url}
        if max_concurrency:
            s3_env["DICOM_ETL_S3_MAX_CONCURRENCY"] = str(max_concurrency)
        before = stand_in.ask("reset")
        s3 = timed_ingest(
            f"s3 -> s3 @{latency_ms:g} ms", files,
            ["--source", "s3://provider/incoming", "--lake", "s3://lake/dicom", "--warehouse", str(work / "s3.duckdb"), *extra],
            s3_env, code_root=code_root, cores=ingest_cores,
        )
        after = stand_in.ask("counts")
    finally:
        stand_in.close()
    s3.requests, s3.by_method = after["requests"], after["by_method"]
    return local, s3, {"cpu_s": after["cpu_s"] - before["cpu_s"]}


def report(local: Figures, s3: Figures, stand_in: dict) -> str:
    """The figures as printed: one line per variant, then the ratio."""
    return "\n".join([
        local.line(),
        s3.line(),
        f"{'':<18} moto + proxy used {stand_in['cpu_s']:.1f} s of CPU on this machine during the S3 run",
        f"S3 / local files/s: {s3.files_per_s / local.files_per_s:.2f}x",
    ])


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.s3 --serve MS`` (the stand-in child) or a standalone side-by-side run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.s3")
    parser.add_argument("--serve", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--code-root", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    from benchmarks.ingest import _start_server

    server, api = _start_server()
    env = {**os.environ, "PREFECT_API_URL": api}
    env.setdefault("DICOM_ETL_DEID_SECRET", "benchmark-secret")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
            figures = run_side_by_side(args.corpus, Path(tmp), latency_ms=args.latency_ms, env=env, code_root=args.code_root)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    print(report(*figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
