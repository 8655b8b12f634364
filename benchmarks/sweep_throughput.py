"""Throughput and per-worker memory of ``geomlib sweep`` with 1 and 2 Dask workers.

A sweep of K checkpoints (default: the demo training run's, from ``scripts/train_demo_sweep.py``, written to a
temporary directory; or ``--synthetic`` random llama checkpoints of a chosen size) runs three ways, each into a
fresh cache so every task computes:

- ``serial``: in this process, one task after the other, one torch thread per task;
- ``LocalCluster`` with 1 worker process, then with 2 (one thread each), as ``geomlib sweep`` runs by default.

For each: wall seconds (including the cluster's start and its workers' imports), tasks per minute, speedup over
1 worker, and the peak RSS of every worker process (sampled every 50 ms through psutil), set against the peak
RSS of one checkpoint's ``geomlib compute`` of the same analyses in a child process (the single-model bound).
Results go to ``benchmarks/results/sweep_throughput-{demo,synthetic}.{json,md}`` and stdout.

    .venv/bin/python benchmarks/sweep_throughput.py                 # the demo run (trains it first: ~2 min)
    .venv/bin/python benchmarks/sweep_throughput.py --run /tmp/demo-sweep-run
    .venv/bin/python benchmarks/sweep_throughput.py --synthetic 8 --hidden 256 --layers 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT))


class RssSampler:
    """Peak RSS of each descendant process of this one (the cluster's nannies and workers), by pid."""

    def __init__(self, every: float = 0.05) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak: dict[int, tuple[str, int]] = {}
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for p in self._me.children(recursive=True):
                try:
                    rss, cmd = p.memory_info().rss, " ".join(p.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                old = self.peak.get(p.pid, ("", 0))[1]
                self.peak[p.pid] = (cmd, max(old, rss))
            self._stop.wait(self._every)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def workers_mb(self) -> list[float]:
        """Peak RSS of the worker processes (multiprocessing spawn children, not its resource tracker), MB."""
        return sorted((rss / 1e6 for cmd, rss in self.peak.values() if "spawn_main" in cmd), reverse=True)


def single_model_rss_mb(source: str, analyses: str, cache: Path) -> float:
    """Peak RSS (MB) of ``geomlib compute`` of one checkpoint in a child process (os.wait4)."""
    cmd = [sys.executable, "-m", "geomlib", "compute", source, "--analyses", analyses, "--cache", str(cache),
           "--threads", "1", "-q", "--force"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"single-model run failed: {proc.stderr.read().decode()[-400:]}")
    return usage.ru_maxrss / 1e3  # KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="a directory with sweep.json (default: train the demo run)")
    ap.add_argument("--synthetic", type=int, metavar="K", help="K random llama checkpoints instead of the demo run")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--analyses", default="weights,heads,gauge",
                    help="analyses per checkpoint (default: the defaults, weights,heads,gauge; heads runs its "
                         "forward pass)")
    ap.add_argument("--no-compare", action="store_true")
    args = ap.parse_args()

    import geomlib
    from geomlib.store.sweep import items_of, sweep

    tmp = Path(tempfile.mkdtemp(prefix="geomlib-sweep-bench-"))
    if args.synthetic:
        from tests.factories import synthetic

        sources = []
        for k in range(args.synthetic):
            p = tmp / f"ckpt-{k:02d}"
            synthetic.build(p, n_layers=args.layers, seed=k, hidden=args.hidden, heads=8, kv=4,
                            inter=int(2.75 * args.hidden), dtype=__import__("torch").float32)
            sources.append(str(p))
        what = f"{args.synthetic} random llama checkpoints, {args.layers} layers, hidden {args.hidden}"
    else:
        run = args.run
        if run is None:
            run = tmp / "demo-run"
            t = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "scripts" / "train_demo_sweep.py"), str(run), "--quiet"],
                           check=True)
            print(f"trained the demo run in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        sources = [str(run)]
        what = f"the demo training run ({len(items_of(run))} checkpoints, {run})"
    n_ck = len(items_of(sources if len(sources) > 1 else sources[0]))
    n_an = len(args.analyses.split(","))
    n_tasks = n_ck * n_an + (0 if args.no_compare else n_ck - 1)
    first = items_of(sources if len(sources) > 1 else sources[0])[0].source
    single = single_model_rss_mb(first, args.analyses, tmp / "single")

    rows = []
    for label, kw in (("serial", dict(scheduler="serial")), ("1 worker", dict(scheduler="local", workers=1)),
                      ("2 workers", dict(scheduler="local", workers=2))):
        cache = tmp / f"cache-{label.replace(' ', '-')}"
        with RssSampler() as rss:
            t = time.perf_counter()
            ds = sweep(sources if len(sources) > 1 else sources[0], args.analyses, cache, compare=not args.no_compare,
                       progress=False, threads=1, **kw)
            wall = time.perf_counter() - t
        assert not ds.attrs["failed"], ds.attrs["failed"]
        workers = rss.workers_mb()
        rows.append({"run": label, "wall_s": round(wall, 2), "tasks": n_tasks,
                     "tasks_per_min": round(60 * n_tasks / wall, 1),
                     "worker_peak_rss_mb": [round(x) for x in workers]})
        print(rows[-1], file=sys.stderr)
    one = next(r for r in rows if r["run"] == "1 worker")["wall_s"]
    for r in rows:
        r["speedup_vs_1_worker"] = round(one / r["wall_s"], 2)
    result = {"what": what, "analyses": args.analyses, "compare": not args.no_compare, "tasks": n_tasks,
              "single_model_peak_rss_mb": round(single), "rows": rows, "machine": {
                  "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                  "geomlib": geomlib.__version__},
              "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(exist_ok=True)
    tag = "synthetic" if args.synthetic else "demo"
    (RESULTS / f"sweep_throughput-{tag}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Sweep throughput ({result['date']})", "", f"{what}; analyses {args.analyses}"
             f"{'' if args.no_compare else ' + compare of consecutive checkpoints'}: {n_tasks} tasks. "
             f"Single-model peak RSS (one checkpoint's compute, child process): {round(single)} MB.", "",
             "| run | wall s | tasks/min | speedup vs 1 worker | worker peak RSS (MB) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['wall_s']} | {r['tasks_per_min']} | {r['speedup_vs_1_worker']} | "
                     f"{', '.join(map(str, r['worker_peak_rss_mb'])) or '(this process)'} |")
    (RESULTS / f"sweep_throughput-{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
