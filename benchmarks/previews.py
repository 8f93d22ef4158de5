"""``python -m flows bench previews``: preview throughput of the pipeline vs a bare loop.

Both run over the same files in the same process and run: the bare loop is what a script
would do on one core (dcmread -> pixel_array -> rescale + window -> Pillow JPEG); the
pipeline is the preview stage as the ``render-previews`` task runs it (tasks.pixels.preview's
render_batch on a reused process pool, full display pipeline, files written to a lake).
CT slices are not at risk of burned-in text, so they pay nothing for pixel privacy; a last
round measures the images that do: generated ultrasound images with text burned in,
cleaned (OCR, blanking, verification) before their previews are written.
"""

from __future__ import annotations

import argparse


def _bare_loop(files: list, out_dir, *, max_size: int, quality: int) -> None:  # noqa: ANN001
    """The reference: one core, no pool, window from the header or min/max, same decoders."""
    import io

    import numpy as np
    import pydicom
    from PIL import Image
    from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless

    out_dir.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID in (JPEGLSLossless, JPEGLSNearLossless):
            ds.pixel_array_options(decoding_plugin="pyjpegls")  # same decoder as the pipeline: fair
        arr = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        if "WindowCenter" in ds:
            c, w = float(ds.WindowCenter), float(ds.WindowWidth)
            lo, hi = c - w / 2, c + w / 2
        else:
            lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray((np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8))
        img.thumbnail((max_size, max_size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
        (out_dir / f"{i}.jpg").write_bytes(buf.getvalue())  # a preview is only made once it is stored


def main(args: argparse.Namespace) -> int:
    """Run the benchmark with the options of ``bench previews`` and print its figures."""
    import os
    import tempfile
    import time
    from pathlib import Path

    import pydicom

    from benchmarks.data import write_ct_slices, write_us_with_text
    from tasks.compat import pool_pids
    from tasks.pool import make_process_pool
    from tasks.pixels.preview import PreviewOptions, render_batch

    with tempfile.TemporaryDirectory(prefix="bench-previews-") as tmp:
        root = Path(tmp)
        if args.source:
            files = sorted(p for p in Path(args.source).rglob("*") if p.is_file())
            label = args.source
        else:
            files = write_ct_slices(root / "in", count=args.count, size=args.size)
            label = f"{args.count} generated {args.size}x{args.size} 16-bit CT slices (1 in 4 JPEG-LS)"
        images = []
        for p in files:
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
                if "SOPInstanceUID" in ds:
                    images.append((p, str(p), str(ds.SOPInstanceUID)))
            except Exception:  # a non-DICOM file in --source: not part of either measure
                continue
        files = [p for p, _, _ in images]
        mb = sum(p.stat().st_size for p in files) / 1e6
        n = len(files)
        workers = args.workers or os.cpu_count() or 1
        options = PreviewOptions(max_size=args.max_size, quality=args.quality)

        started = time.perf_counter()
        pool = make_process_pool(workers)
        list(pool.map(abs, range(workers * 4)))  # start every worker before timing
        pool_start = time.perf_counter() - started

        import psutil

        procs = [psutil.Process()] + [psutil.Process(p) for p in pool_pids(pool)]

        def cpu() -> float:
            # user + system, and the children's (Tesseract runs as a child of the pool's workers)
            return sum(sum(p.cpu_times()[:4]) for p in procs)

        cpu_used: dict[int, float] = {}

        def best(fn) -> float:  # noqa: ANN001
            times = []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), cpu()
                fn()
                times.append(time.perf_counter() - t0)
                cpu_used[id(fn)] = cpu() - c0
            return min(times)

        try:
            load = os.getloadavg()[0]
            runs = {
                "bare decode+window+JPEG, 1 core": lambda: _bare_loop(
                    files, root / "bare", max_size=args.max_size, quality=args.quality
                ),
                "pipeline preview stage, in-process": lambda: render_batch(
                    root / "lake1", images, secret="bench", options=options
                ),
                f"pipeline preview stage, {workers} procs": lambda: render_batch(
                    root / "lake", images, secret="bench", options=options, executor=pool
                ),
            }
            walls = {name: best(fn) for name, fn in runs.items()}
            cpus = {name: cpu_used[id(fn)] for name, fn in runs.items()}
            cleaned = _bench_cleaning(root, args.text_images, options, pool, best, cpu_used, write_us_with_text)
        finally:
            pool.shutdown()

    print(f"load average at start: {load:.1f} on {os.cpu_count()} cores (other processes share them)")
    print(f"input: {n} files, {mb:.1f} MB ({label}); cores: {os.cpu_count()}, pipeline workers: {workers}")
    print(f"{'':36s} {'images/s':>9s} {'MB/s':>8s} {'wall s':>8s} {'CPU s':>7s}")
    for name, t in walls.items():
        print(f"{name:36s} {n / t:9.1f} {mb / t:8.1f} {t:8.2f} {cpus[name]:7.2f}")
    print(f"process pool start (once per process, not per batch): {pool_start:.2f} s")
    bare, piped = list(walls.values())[0], list(walls.values())[-1]
    print(f"ratio pipeline / bare: {bare / piped:.2f}x (target >= 1.5x; needs idle cores: CPU s / wall s shows what it got)")
    if cleaned:
        count, wall, cpu_s, statuses = cleaned
        print(
            f"cleaned (burned-in text removed and verified), {workers} procs: {count / wall:.1f} images/s, "
            f"{wall:.2f} s wall, {cpu_s:.2f} CPU s with OCR for {count} 640x480 US images ({statuses})"
        )
    return 0


def _bench_cleaning(root, count: int, options, pool, best, cpu_used, write):  # noqa: ANN001, ANN202
    """Previews of at-risk images with burned-in text: (images, wall s, CPU s incl. OCR, statuses) or None."""
    import collections

    import pydicom

    from tasks.pixels.preview import render_batch

    if count <= 0:
        return None
    files = write(root / "us", count=count)
    images = [(p, str(p), str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)) for p in files]
    rows: list = []

    def run() -> None:
        rows[:] = render_batch(root / "lake-us", images, secret="bench", options=options, executor=pool)[0]

    wall = best(run)
    statuses = collections.Counter(r["pixel_deid_status"] for r in rows)
    return count, wall, cpu_used[id(run)], ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
