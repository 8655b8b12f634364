"""Speed, memory and I/O of ``geomlib compute`` against the seeds' way, at Qwen3-0.6B and Qwen3-4B shapes.

Random bf16 Qwen3 checkpoints are written at the real layer shapes (vocabulary cut to 1024, q_norm/k_norm
present): Qwen3-0.6B as one ``model.safetensors`` (``gauge_cost.write_qwen3``), Qwen3-4B (7.3 GB) sharded
as Hugging Face does (``model-0000k-of-0000n.safetensors`` + ``model.safetensors.index.json``), streamed one
tensor at a time so the writer never holds more than one matrix.  Every row is a separate child process
timed for wall and CPU (user+sys) seconds and peak RSS (``os.wait4``), and, through a wrapper that writes its
``/proc/self/io`` at exit, for the bytes it read from storage: the checkpoint files are evicted from the page
cache (``os.sync`` + ``POSIX_FADV_DONTNEED``, residency checked with ``mincore``) before each run, so
``read_bytes`` is what the run fetched from the checkpoint (plus any other uncached file, normally ~0).

Rows (per shape): the seeds' way (seed 003 and seed 004 re-implemented in ``benchmarks/seeds_way/``: the
whole model through transformers, then numpy), geomlib computing the same outputs (weights only, no nulls,
no aligned pairs, no residual spectra; its numbers are checked against the seeds' JSON), geomlib's full
default suite (no forward pass); once: the SmolLM2 demo's full suite with its forward pass, a thread-policy
probe (eigvalsh 1024² with 1, 2 and geomlib's chosen threads, quiet and under a competing busy process) and,
with ``--dashboard``, the dashboard latency benchmark.  With ``--layers-4b N`` (or ``--layers-06b``) below the
real depth, the full-suite row gets an "extrapolated to full depth" column (per-layer slope of the run; verdict
judged on it and marked "(extrapolated)").  Targets are in ``TARGETS``; results go to
``benchmarks/results/compute_speed.{json,md}`` and stdout.  Exits 0 even when a target fails, unless --strict.

    .venv/bin/python benchmarks/compute_speed.py                         # everything but the dashboard
    .venv/bin/python benchmarks/compute_speed.py --keep /data/ckpts      # reuse the written checkpoints
    .venv/bin/python benchmarks/compute_speed.py --only 06b,threads --layers-06b 2   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
THIS = Path(__file__).resolve()
SEEDS = HERE / "seeds_way"
RESULTS = HERE / "results"
DASHBOARD_JSON = ROOT / "test-artifacts" / "dashboard_latency.json"

#: every target of the benchmark, in one place
TARGETS = {
    "06b": {"seeds_outputs_speedup_wall": 4.0,   # geomlib (seeds' outputs) >= 4x faster than the seeds' way combined
            "seeds_outputs_rss_ratio": 4.0,      # ... and >= 4x less peak RSS
            "full_wall_s": 120.0, "full_rss_mb": 1024.0},
    "4b": {"full_wall_s": 1800.0, "full_rss_mb": 1536.0, "full_bytes_ratio": 2.0},  # bytes read / checkpoint size
    "demo": {"wall_s": 30.0},
    "dashboard": {"p95_ms": 150.0},
    # geomlib (float64) vs the seeds' JSON (float32): cosines, PCA fractions, projections absolute; norms
    # (scale, ‖γ‖) relative, since the seeds' float32 np.linalg.norm is itself ~5e-5 off at 4B's MLP size
    "agreement": {"max_abs": 1e-5, "norm_max_rel": 1e-4},
}

#: model shapes (vocabulary cut to 1024 so the files stay small)
SHAPES = {"06b": "Qwen3-0.6B", "4b": "Qwen3-4B"}


def _cfg(shape: str, layers: int) -> dict:
    sys.path.insert(0, str(HERE))
    from gauge_cost import QWEN3_06B

    if shape == "06b":
        return {**QWEN3_06B, "num_hidden_layers": layers}
    return {**QWEN3_06B, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": layers,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128}


FULL_LAYERS = {"06b": 28, "4b": 36}

# ---------------------------------------------------------------------------------------------- checkpoints


def _tensor_specs(cfg: dict) -> list[tuple[str, tuple[int, ...], float, float, int | None]]:
    """(name, shape, scale, offset, layer) in file order, as ``gauge_cost.write_qwen3`` draws them."""
    h, i, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], h), 0.02, 0.0, None),
           ("model.norm.weight", (h,), 0.1, 1.0, None)]
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}."
        out += [(p + "self_attn.q_proj.weight", (nq * d, h), 0.02, 0.0, L),
                (p + "self_attn.k_proj.weight", (nkv * d, h), 0.02, 0.0, L),
                (p + "self_attn.v_proj.weight", (nkv * d, h), 0.02, 0.0, L),
                (p + "self_attn.o_proj.weight", (h, nq * d), 0.02, 0.0, L),
                (p + "self_attn.q_norm.weight", (d,), 0.1, 1.0, L),
                (p + "self_attn.k_norm.weight", (d,), 0.1, 1.0, L),
                (p + "mlp.gate_proj.weight", (i, h), 0.02, 0.0, L),
                (p + "mlp.up_proj.weight", (i, h), 0.02, 0.0, L),
                (p + "mlp.down_proj.weight", (h, i), 0.02, 0.0, L),
                (p + "input_layernorm.weight", (h,), 0.1, 1.0, L),
                (p + "post_attention_layernorm.weight", (h,), 0.1, 1.0, L)]
    return out


def checkpoint_bytes(cfg: dict) -> int:
    """Payload bytes of a bf16 checkpoint of ``cfg`` (headers excluded: a few kB)."""
    return sum(2 * math.prod(s) for _, s, *_ in _tensor_specs(cfg))


def write_qwen3_sharded(path: Path, cfg: dict, seed: int = 0, shard_mb: int = 2048) -> Path:
    """A random bf16 checkpoint with ``cfg``'s shapes, sharded as Hugging Face does, streamed tensor by tensor.

    Each shard's safetensors header is written first (the shapes are known), then each tensor is drawn,
    converted and written before the next is drawn: the writer holds one matrix at a time.  A layer never
    straddles two shards; the embedding goes in the first, the final norm in the last.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    specs = _tensor_specs(cfg)
    limit = shard_mb * 1024**2
    groups: list[list] = [[]]  # shards: lists of specs
    size = 0
    for key in [None] + list(range(cfg["num_hidden_layers"])):
        unit = [s for s in specs if s[4] == key and not (key is None and s[0] == "model.norm.weight")]
        ub = sum(2 * math.prod(s[1]) for s in unit)
        if groups[-1] and size + ub > limit:
            groups.append([])
            size = 0
        groups[-1] += unit
        size += ub
    groups[-1].append(next(s for s in specs if s[0] == "model.norm.weight"))
    path.mkdir(parents=True, exist_ok=True)
    n = len(groups)
    weight_map, total = {}, 0
    for k, group in enumerate(groups, 1):
        name = f"model-{k:05d}-of-{n:05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for t, shape, *_ in group:
            nb = 2 * math.prod(shape)
            header[t] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
            off += nb
            weight_map[t] = name
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        with open(path / name, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for t, shape, scale, offset, _ in group:
                x = (torch.randn(*shape, generator=gen) * scale + offset).to(torch.bfloat16)
                f.write(x.view(torch.uint8).numpy().data)
                del x
        total += off
    (path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def ckpt_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.name != ".complete") if path.is_dir() else [path]


def ckpt_size(path: Path) -> int:
    return sum(p.stat().st_size for p in ckpt_files(path) if p.suffix in (".safetensors", ".gguf", ".bin"))


# ------------------------------------------------------------------------------------------ page cache, I/O


def evict(files: list[Path]) -> None:
    """Drop ``files`` from the page cache (written pages are flushed first: dirty pages are not dropped)."""
    os.sync()
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident_fraction(files: list[Path]) -> float | None:
    """Fraction of the files' pages in the page cache (``mincore`` on a mapping that faults nothing in)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                              ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        page = os.sysconf("SC_PAGE_SIZE")
        total = resident = 0
        for p in files:
            size = p.stat().st_size
            if not size:
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
                if addr in (None, ctypes.c_void_p(-1).value):
                    return None
                try:
                    npages = (size + page - 1) // page
                    vec = (ctypes.c_ubyte * npages)()
                    if libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                        return None
                    resident += sum(1 for b in bytes(vec) if b & 1)
                    total += npages
                finally:
                    libc.munmap(ctypes.c_void_p(addr), size)
            finally:
                os.close(fd)
        return resident / total if total else None
    except Exception:
        return None


def _child_main(argv: list[str]) -> None:
    """``compute_speed.py --as-child OUT.json (-m MODULE | -c CODE | SCRIPT) ARGS...``: run the target in this
    process and, at exit, write its ``/proc/self/io`` counters and ``ru_maxrss`` to OUT.json."""
    import atexit
    import resource
    import runpy

    out = argv[0]

    def dump() -> None:
        try:
            io = {k: int(v) for k, v in (line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())}
        except OSError as exc:
            io = {"error": str(exc)}
        ru = resource.getrusage(resource.RUSAGE_SELF)
        Path(out).write_text(json.dumps({"io": io, "ru_maxrss_kb": ru.ru_maxrss,
                                         "cpu_s": ru.ru_utime + ru.ru_stime}))

    atexit.register(dump)
    rest = argv[1:]
    if rest[0] == "-m":
        sys.argv = [rest[1]] + rest[2:]
        sys.path[0] = os.getcwd()
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    elif rest[0] == "-c":
        sys.argv = ["-c"] + rest[2:]
        sys.path[0] = os.getcwd()
        exec(compile(rest[1], "<string>", "exec"), {"__name__": "__main__"})
    else:
        sys.argv = rest
        sys.path[0] = str(Path(rest[0]).resolve().parent)
        runpy.run_path(rest[0], run_name="__main__")


# --------------------------------------------------------------------------------------------- child runs


class Runner:
    """Runs children through the I/O wrapper; keeps their logs in the work directory."""

    def __init__(self, work: Path, timeout_s: float | None, bytes_ok: bool):
        self.work, self.timeout_s, self.bytes_ok, self.n = work, timeout_s, bytes_ok, 0

    def run(self, target: list[str], files: list[Path] | None = None, env: dict | None = None) -> dict:
        """Wall/CPU/peak RSS of one child; with ``files``, they are evicted first and the bytes read reported."""
        self.n += 1
        io_path, log_path = self.work / f"io-{self.n}.json", self.work / f"log-{self.n}.txt"
        io_path.unlink(missing_ok=True)
        rec: dict = {}
        if files:
            evict(files)
            rec["resident_after_evict"] = resident_fraction(files)
        rec["load_before"] = os.getloadavg()
        cmd = [sys.executable, str(THIS), "--as-child", str(io_path)] + target
        t0 = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
            timer, fired = None, []
            if self.timeout_s:
                def kill() -> None:  # the wrapper's atexit never runs: read the counters from outside first
                    try:
                        fired.append({k: int(v) for k, v in (ln.split(": ") for ln in
                                      Path(f"/proc/{proc.pid}/io").read_text().splitlines())})
                    except OSError:
                        fired.append({})
                    proc.kill()

                timer = threading.Timer(self.timeout_s, kill)
                timer.start()
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if timer:
                timer.cancel()
            if fired:
                rec["timed_out"] = True
        rec.update(wall_s=time.perf_counter() - t0, cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_mb=ru.ru_maxrss / 1024,
                   rc=proc.returncode, load_after=os.getloadavg(), cmd=" ".join(cmd[4:]), log=str(log_path))
        io = json.loads(io_path.read_text()).get("io", {}) if io_path.exists() else (fired[0] if fired else {})
        rec["rchar"] = io.get("rchar")
        rec["read_bytes"] = io.get("read_bytes") if (files and self.bytes_ok) else None
        if proc.returncode:
            rec["error"] = log_path.read_text(errors="replace")[-1500:]
        return rec


def failure(r: dict) -> str:
    """A short note on why a child failed."""
    if r.get("timed_out"):
        return f"killed after {r['wall_s']:.0f} s (--timeout-s); log: {r['log']}"
    if r["rc"] in (-9, 137):
        return f"killed (signal 9: out of memory?); log: {r['log']}"
    return f"exit {r['rc']}; log: {r['log']}"


def io_selfcheck(work: Path, runner: Runner) -> dict:
    """Whether ``read_bytes`` sees the eviction here: a 32 MiB file read after eviction, then from the cache."""
    p = work / "io_probe.bin"
    p.write_bytes(os.urandom(32 * 1024**2))
    code = f"f = open({str(p)!r}, 'rb')\nwhile f.read(1 << 20): pass"
    runner.bytes_ok = True
    cold = runner.run(["-c", code], files=[p])
    runner.run(["-c", code], files=None)  # its counters are read from the io file below
    io_warm = json.loads((work / f"io-{runner.n}.json").read_text())["io"].get("read_bytes")
    p.unlink()
    size = 32 * 1024**2
    ok = cold["read_bytes"] is not None and cold["read_bytes"] >= 0.9 * size and (io_warm or 0) < 0.1 * size
    runner.bytes_ok = ok
    return {"file_bytes": size, "read_bytes_after_evict": cold["read_bytes"], "read_bytes_cached": io_warm,
            "rchar_after_evict": cold["rchar"], "resident_after_evict": cold.get("resident_after_evict"),
            "read_bytes_reflects_eviction": ok}


# ----------------------------------------------------------------------------------- geomlib, flags, seeds


def geomlib_help() -> str:
    r = subprocess.run([sys.executable, "-m", "geomlib", "compute", "--help"], cwd=ROOT, capture_output=True,
                       text=True)
    return r.stdout


def supported(flags: list[str], help_text: str) -> tuple[list[str], list[str]]:
    """The flags (``--name`` or ``--name value``) this geomlib knows; the others are returned to be noted."""
    used, dropped, i = [], [], 0
    while i < len(flags):
        f = flags[i]
        val = flags[i + 1] if i + 1 < len(flags) and not flags[i + 1].startswith("--") else None
        ok = re.search(rf"(?<![\w.-]){re.escape(f)}(?![\w.-])", help_text) is not None
        if ok and val is not None:
            m = re.search(rf"{re.escape(f)} \{{([^}}]*)\}}", help_text)  # a choice list: the value must be in it
            ok = m is None or val in m.group(1).split(",")
        grp = [f] + ([val] if val is not None else [])
        (used if ok else dropped).extend(grp if ok else [" ".join(grp)])
        i += len(grp)
    return used, dropped


def seeds_mem_need(cfg: dict) -> dict:
    """Rough peak RSS (bytes) of the seeds' way: 003 holds the bf16 model and a float32 copy of every layer,
    004 the float32 model; plus ~0.7 GB of Python, torch and transformers."""
    total = checkpoint_bytes(cfg) // 2  # parameters
    layers = sum(math.prod(s) for _, s, _, _, L in _tensor_specs(cfg) if L is not None)
    base = 0.7 * 1024**3
    return {"seed003": int(2 * total + 4 * layers + base), "seed004": int(4 * total + base)}


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def compare(seed3: dict, seed4: dict, ds) -> dict:
    """Max differences between geomlib's dataset and the seeds' JSON (NaN on one side only is counted)."""
    import numpy as np

    diffs: dict[str, list[float]] = {k: [] for k in ("cos", "resid_norm", "scale", "scale_pca_explained",
                                                     "gamma_norm", "gamma_proj_top1", "gamma_pca_explained",
                                                     "gamma_cos_adjacent", "norm_rel")}
    nan_mismatch = {k: 0 for k in diffs}

    def add(key, a, b, rel=None):
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            nan_mismatch[key] += math.isnan(a) != math.isnan(b)
            return
        diffs[key].append(abs(a - b))
        if rel:
            diffs[rel].append(abs(a - b) / max(abs(b), 1e-30))

    fams = set(ds["family"].values.tolist())
    for pr in seed3["pair_results"]:
        L = pr["L"]
        for fam, v in pr["families"].items():
            if fam in fams:
                add("cos", ds["cos"].sel(family=fam, layer=L, layer_b=L + 1), v["cos"])
                add("resid_norm", ds["resid_norm"].sel(family=fam, layer=L), v["resid_norm"])
    for fam, vals in seed3["scales"].items():
        for L, v in enumerate(vals):
            if v is not None and fam in fams:
                add("scale", ds["scale"].sel(family=fam, layer=L), v, rel="norm_rel")
    S = np.array(seed3["scale_pca_singvals"])
    same_fams = ds.attrs.get("scale_pca_families", "") == ",".join(seed3["fam_used"])
    if same_fams:
        for a, b in zip(ds["scale_pca_explained"].values, S**2 / (S**2).sum()):
            add("scale_pca_explained", a, b)
    g = "input_ln"
    for L, v in enumerate(seed4["norms"]):
        add("gamma_norm", ds["gamma_norm"].sel(family=g, layer=L), v, rel="norm_rel")
    proj = ds["gamma_proj_top1"].sel(family=g).values
    sign = 1.0 if np.nansum(proj * np.array(seed4["proj_top1"])) >= 0 else -1.0  # PC1's sign is arbitrary
    for a, b in zip(proj, seed4["proj_top1"]):
        add("gamma_proj_top1", sign * a, b)
    for a, b in zip(ds["gamma_pca_explained"].sel(family=g).values, seed4["explained_var"]):
        add("gamma_pca_explained", a, b)
    for L, v in enumerate(seed4["cos_adjacent"]):
        add("gamma_cos_adjacent", ds["cos"].sel(family=g, layer=L, layer_b=L + 1), v)
    mx = {k: (max(v) if v else None) for k, v in diffs.items()}
    overall = max((v for k, v in mx.items() if k not in ("scale", "gamma_norm", "norm_rel") and v is not None),
                  default=None)
    t = TARGETS["agreement"]
    ok = (overall is not None and overall <= t["max_abs"] and (mx["norm_rel"] or 0) <= t["norm_max_rel"]
          and not any(nan_mismatch.values()) and same_fams)
    return {"max_abs_diff": overall, "norm_max_rel_diff": mx["norm_rel"], "per_metric_max": mx,
            "n_compared": {k: len(v) for k, v in diffs.items()}, "nan_mismatch": nan_mismatch,
            "scale_pca_same_families": same_fams, "proj_top1_sign_flipped": sign < 0, "agree": ok}


# --------------------------------------------------------------------------------------------- the rows


def fmt(v, nd=1):
    return "n/a" if v is None else f"{v:.{nd}f}"


def _verdict(ok: bool | None, tag: str = "") -> str:
    return "—" if ok is None else ("PASS" if ok else "FAIL") + tag


class Bench:
    def __init__(self, args, ckdir: Path, work: Path):
        self.args, self.ckdir, self.work = args, ckdir, work  # checkpoints; logs, caches and outputs
        self.runner = Runner(work, args.timeout_s or None, bytes_ok=False)
        self.rows: list[dict] = []
        self.checkpoints: dict = {}
        self.help = geomlib_help()
        self.threads_flag: list[str] = []
        self.threads_note = None
        if args.threads is not None:
            used, dropped = supported(["--threads", str(args.threads)], self.help)
            self.threads_flag = used
            self.threads_note = "passed to geomlib" if used else "geomlib has no --threads: omitted"

    # checkpoints -----------------------------------------------------------------------------------
    def checkpoint(self, shape: str, layers: int) -> Path | None:
        cfg = _cfg(shape, layers)
        d = self.ckdir / f"qwen3-{shape}-L{layers}"
        stamp = json.dumps({"cfg": cfg, "seed": 0, "shard_mb": self.args.shard_mb if shape == "4b" else None,
                            "writer": 1}, sort_keys=True)
        info = {"path": str(d), "config": {k: cfg[k] for k in ("num_hidden_layers", "hidden_size",
                                                                "intermediate_size", "num_attention_heads",
                                                                "num_key_value_heads", "head_dim", "vocab_size")}}
        if (d / ".complete").exists() and (d / ".complete").read_text() == stamp:
            info["written"] = "reused"
        else:
            shutil.rmtree(d, ignore_errors=True)
            head = ("import sys, json; sys.path.insert(0, 'benchmarks'); from pathlib import Path; "
                    f"path, cfg = Path({str(d)!r}), json.loads({json.dumps(cfg)!r}); ")
            if shape == "06b":  # one model.safetensors, as Qwen3-0.6B ships
                code = head + "from gauge_cost import write_qwen3; write_qwen3(path, cfg)"
            else:
                code = (head + "from compute_speed import write_qwen3_sharded; "
                        f"write_qwen3_sharded(path, cfg, shard_mb={self.args.shard_mb})")
            print(f"writing {SHAPES[shape]}-shaped checkpoint, {layers} layers -> {d}", flush=True)
            r = self.runner.run(["-c", code])
            if r["rc"]:
                print(f"  writer failed:\n{r.get('error')}", flush=True)
                info.update(written="failed", error=r.get("error"))
                self.checkpoints[f"{shape}-L{layers}"] = info
                return None
            (d / ".complete").write_text(stamp)
            info["written"] = {"wall_s": round(r["wall_s"], 1), "peak_rss_mb": round(r["peak_rss_mb"])}
        info["bytes"] = ckpt_size(d)
        info["files"] = [p.name for p in ckpt_files(d)]
        self.checkpoints[f"{shape}-L{layers}"] = info
        print(f"  {info['bytes'] / 1e9:.2f} GB in {len(info['files'])} files ({info['written']})", flush=True)
        return d

    # rows ------------------------------------------------------------------------------------------
    def add(self, row: dict) -> dict:
        ck = row.get("ckpt_bytes")
        rb = row.get("read_bytes")
        row["bytes_ratio"] = rb / ck if (rb is not None and ck) else None
        res = row.get("resident_after_evict")
        if rb is not None and res is not None and res > 0.01:  # pages another process maps are not dropped
            row["notes"] = "; ".join(x for x in (row.get("notes"), f"{res:.0%} of the checkpoint stayed cached "
                                                  "after eviction (mapped by another process?): bytes read "
                                                  "understated") if x)
        self.rows.append(row)
        print(f"  {row['row']}: wall {fmt(row.get('wall_s'))} s, CPU {fmt(row.get('cpu_s'))} s, "
              f"peak RSS {fmt(row.get('peak_rss_mb'), 0)} MB, read {fmt(rb and rb / 1e6, 0)} MB"
              f" -> {row.get('verdict', '—')}" + (f"  [{row['notes']}]" if row.get("notes") else ""), flush=True)
        return row

    def geomlib_cmd(self, source: str, cache: Path, extra: list[str]) -> tuple[list[str], list[str]]:
        used, dropped = supported(extra, self.help)
        return ["-m", "geomlib", "compute", source, *used, "--force", "-q", "--cache", str(cache),
                *self.threads_flag], dropped

    def shape(self, shape: str) -> None:
        full = FULL_LAYERS[shape]
        layers = self.args.layers_06b if shape == "06b" else self.args.layers_4b
        name = SHAPES[shape]
        tag = f"{name}" + (f" ({layers} of {full} layers)" if layers != full else "")
        d = self.checkpoint(shape, layers)
        if d is None:
            self.add({"row": f"{tag} · checkpoint", "verdict": "FAIL", "notes": "the writer failed"})
            return
        cfg = _cfg(shape, layers)
        files, size = ckpt_files(d), ckpt_size(d)
        base = {"shape": shape, "layers": layers, "ckpt_bytes": size}

        # a. the seeds' way ---------------------------------------------------------------------------
        need, avail = seeds_mem_need(cfg), mem_available()
        seeds = {}
        for s in ("seed003", "seed004"):
            out = self.work / f"{s}-{shape}.json"
            row = {**base, "row": f"{tag} · seeds' way: {s[:4]} {s[4:]}", "kind": f"seeds_{s}"}
            if self.args.mem_guard and need[s] > 0.85 * avail:
                row.update(verdict="—", notes=f"not run: needs ~{need[s] / 1e9:.1f} GB, {avail / 1e9:.1f} GB "
                                               "available (--no-mem-guard runs it anyway)")
                seeds[s] = self.add(row)
                continue
            r = self.runner.run([str(SEEDS / f"{s}_way.py"), "--model", str(d), "--out", str(out)], files=files)
            row.update(r)
            row["verdict"] = "—" if not r["rc"] else "FAIL"
            if r["rc"]:
                row["notes"] = failure(r)
            row["output"] = str(out) if out.exists() else None
            seeds[s] = self.add(row)
        ran = [seeds[s] for s in seeds if "wall_s" in seeds[s] and not seeds[s].get("rc")]
        comb = {**base, "row": f"{tag} · seeds' way combined (003 + 004)", "kind": "seeds_combined"}
        if len(ran) == 2:
            comb.update(wall_s=sum(r["wall_s"] for r in ran), cpu_s=sum(r["cpu_s"] for r in ran),
                        peak_rss_mb=max(r["peak_rss_mb"] for r in ran),
                        read_bytes=(None if any(r["read_bytes"] is None for r in ran)
                                    else sum(r["read_bytes"] for r in ran)),
                        notes="sum of wall, CPU and bytes; max of RSS", verdict="—")
        else:
            comb.update(verdict="—", notes="n/a: not both seeds ran")
        comb = self.add(comb)

        # b. geomlib, the seeds' outputs -------------------------------------------------------------------
        cache = self.work / f"cache-{shape}-seeds"
        target, dropped = self.geomlib_cmd(str(d), cache, ["--analyses", "weights", "--weights.aligned-pairs", "none",
                                                           "--weights.null-draws", "0",
                                                           "--weights.gamma-null-draws", "0",
                                                           "--weights.cos-pairs", "adjacent",
                                                           "--no-weights.residual-spectrum"])
        r = self.runner.run(target, files=files)
        row = {**base, "row": f"{tag} · geomlib, the seeds' outputs", "kind": "geomlib_seeds", **r}
        notes = [f"flags not in this geomlib, ran without: {', '.join(dropped)}"] if dropped else []
        ok = None if r["rc"] else True
        if r["rc"]:
            ok, notes = False, notes + [failure(r)]
        elif all(seeds[s].get("output") for s in seeds):
            import geomlib

            ds = geomlib.load(str(d), "weights", cache_dir=str(cache))
            agree = compare(json.loads(Path(seeds["seed003"]["output"]).read_text()),
                            json.loads(Path(seeds["seed004"]["output"]).read_text()), ds)
            row["agreement"] = agree
            t = TARGETS["agreement"]
            notes.append(f"vs seeds: max|Δ| {agree['max_abs_diff']:.1e} (≤{t['max_abs']:.0e}), norms rel "
                         f"{agree['norm_max_rel_diff']:.1e} (≤{t['norm_max_rel']:.0e})"
                         + ("" if agree["agree"] else " DISAGREE"))
            ok = agree["agree"]
        else:
            notes.append("no agreement check: the seeds' outputs are missing")
        tgt = []
        if shape == "06b" and "wall_s" in comb and not r["rc"]:
            t = TARGETS["06b"]
            row["speedup_wall"] = comb["wall_s"] / r["wall_s"]
            row["rss_ratio"] = comb["peak_rss_mb"] / r["peak_rss_mb"]
            tgt.append(f"≥{t['seeds_outputs_speedup_wall']:g}x faster, ≥{t['seeds_outputs_rss_ratio']:g}x less RSS "
                       "than the seeds' way")
            notes.insert(0, f"{row['speedup_wall']:.1f}x faster, {row['rss_ratio']:.1f}x less RSS")
            ok = bool(ok) and row["speedup_wall"] >= t["seeds_outputs_speedup_wall"] \
                and row["rss_ratio"] >= t["seeds_outputs_rss_ratio"]
        elif shape == "06b":
            tgt.append("≥4x faster, ≥4x less RSS (n/a: no seeds' row)")
        tgt.append("agrees with the seeds")
        row.update(target="; ".join(tgt), verdict=_verdict(ok), notes="; ".join(notes))
        self.add(row)
        shutil.rmtree(cache, ignore_errors=True)

        # c. geomlib full default suite ---------------------------------------------------------------------
        row = self.full_suite(d, files, size, f"{tag} · geomlib full default suite (no forward pass)", base)
        t = TARGETS[shape]
        row["target"] = f"≤{t['full_wall_s']:g} s, ≤{t['full_rss_mb']:g} MB" + (
            f", read ≤{t['full_bytes_ratio']:g}× ckpt" if "full_bytes_ratio" in t else "")
        if layers != full and not row.get("rc"):
            row["extrapolated"] = self.extrapolate(shape, layers, full, row, base)
        judged = row.get("extrapolated", row)
        if row.get("rc"):
            row["verdict"] = "FAIL"
        else:
            rb = judged.get("bytes_ratio")
            ok = judged["wall_s"] <= t["full_wall_s"] and judged["peak_rss_mb"] <= t["full_rss_mb"]
            if "full_bytes_ratio" in t and rb is not None:
                ok = ok and rb <= t["full_bytes_ratio"]
            row["verdict"] = _verdict(ok, " (extrapolated)" if "extrapolated" in row else "")
            if "full_bytes_ratio" in t and rb is None:
                row["notes"] = (row.get("notes", "") + "; bytes read n/a: judged on wall and RSS only").strip("; ")
        self.add(row)

    def full_suite(self, d: Path, files: list[Path], size: int, label: str, base: dict) -> dict:
        cache = self.work / f"cache-full-{d.name}"
        target, dropped = self.geomlib_cmd(str(d), cache, ["--no-heads.forward-pass"])
        r = self.runner.run(target, files=files)
        shutil.rmtree(cache, ignore_errors=True)
        row = {**base, "row": label, "kind": "geomlib_full", **r}
        if dropped:
            row["notes"] = f"ran without: {', '.join(dropped)}"
        if r["rc"]:
            row["notes"] = (row.get("notes", "") + f"; {failure(r)}").strip("; ")
        return row

    def extrapolate(self, shape: str, n: int, full: int, row: dict, base: dict) -> dict:
        """Per-layer slope, extrapolated to the real depth: the measured values scaled by full/n
        (``--extrapolate proportional``, the default; the peak RSS is kept as measured), or a linear fit through
        a second run at half the depth (``fit``, needs n >= 4: a 1-layer model has no layer pairs and would skew
        the slope; a fitted peak RSS is never below the measured one)."""
        full_bytes = checkpoint_bytes(_cfg(shape, full))
        keys = ("wall_s", "cpu_s", "peak_rss_mb", "read_bytes")
        method, other = f"proportional: wall, CPU, bytes × {full}/{n}, peak RSS as measured", None
        m = n // 2
        if self.args.extrapolate == "fit" and m >= 2:
            d2 = self.checkpoint(shape, m)
            if d2 is not None:
                r2 = self.full_suite(d2, ckpt_files(d2), ckpt_size(d2), "", base)
                if not r2["rc"]:
                    other = r2
                    method = f"linear fit over {m} and {n} layers"
                    row["fit_run"] = {k: r2.get(k) for k in (*keys, "load_before", "load_after")} | {"layers": m}
                if not self.args.keep:
                    shutil.rmtree(d2, ignore_errors=True)
        out = {"layers": full, "method": method, "ckpt_bytes": full_bytes}
        for k in keys:
            v = row.get(k)
            if v is None:
                out[k] = None
            elif other is not None and other.get(k) is not None:
                slope = (v - other[k]) / (n - m)
                out[k] = v + slope * (full - n)
                out[f"{k}_per_layer"] = slope
                if k == "peak_rss_mb":
                    out[k] = max(out[k], v)
            elif k == "peak_rss_mb":
                out[k] = v  # one run cannot separate a per-layer slope from the base: kept as measured
            else:
                out[k] = v * full / n
                out[f"{k}_per_layer"] = v / n
        out["bytes_ratio"] = out["read_bytes"] / full_bytes if out["read_bytes"] is not None else None
        return out

    def demo(self) -> None:
        from geomlib.io.demo import demo_path

        src = "demo:smollm2-135m"
        p = Path(demo_path(src))
        files = ckpt_files(p)
        size = sum(f.stat().st_size for f in files)
        cache = self.work / "cache-demo"
        target, dropped = self.geomlib_cmd(src, cache, [])
        r = self.runner.run(target, files=files)
        shutil.rmtree(cache, ignore_errors=True)
        t = TARGETS["demo"]["wall_s"]
        self.add({"row": "demo:smollm2-135m · full default suite incl. forward pass", "kind": "demo",
                  "ckpt_bytes": size, **r, "target": f"≤{t:g} s",
                  "verdict": "FAIL" if r["rc"] else _verdict(r["wall_s"] <= t),
                  "notes": failure(r) if r["rc"] else ""})

    def dashboard(self) -> None:
        before = DASHBOARD_JSON.stat().st_mtime if DASHBOARD_JSON.exists() else None
        r = self.runner.run([str(HERE / "dashboard_latency.py")])
        t = TARGETS["dashboard"]["p95_ms"]
        row = {"row": "dashboard · widget change → figure updated", "kind": "dashboard", **r,
               "target": f"p95 ≤{t:g} ms"}
        fresh = DASHBOARD_JSON.exists() and DASHBOARD_JSON.stat().st_mtime != before
        if r["rc"] or not fresh:
            row.update(verdict="FAIL", notes=(failure(r) + "; " if r["rc"] else "")
                       + ("" if fresh else f"{DASHBOARD_JSON} not written"))
        else:
            res = json.loads(DASHBOARD_JSON.read_text())
            lat = res.get("latency_ms", {})
            row["p95_ms"] = lat.get("p95")
            row["verdict"] = _verdict(lat.get("p95") is not None and lat["p95"] <= t)
            row["notes"] = (f"p50 {fmt(lat.get('p50'), 0)} ms, p95 {fmt(lat.get('p95'), 0)} ms, "
                            f"max {fmt(lat.get('max'), 0)} ms over {lat.get('n')} changes (wall = the whole benchmark)")
        self.add(row)

    def threads(self) -> None:
        out = self.work / "threads.json"
        r = self.runner.run(["-c", THREADS_PROBE, str(out), str(self.args.load_wait_s)])
        if r["rc"] or not out.exists():
            self.add({"row": "threads · eigvalsh 1024² f64", "kind": "threads", **r, "verdict": "FAIL",
                      "notes": failure(r) if r["rc"] else "no result file"})
            return
        res = json.loads(out.read_text())
        self.thread_result = res
        for phase in ("quiet", "loaded"):
            ph = res[phase]
            for k in ("1", "2", "policy"):
                v = ph.get(k)
                if k == "policy" and not isinstance(v, dict):
                    note = f"n/a: {res.get('policy_error', 'geomlib.threads missing')}"
                    row = {"row": f"threads · {phase} · geomlib policy", "kind": "threads", "verdict": "—",
                           "notes": note}
                else:
                    label = (f"geomlib policy (chose {v['chosen']}, torch uses {v['threads']})" if k == "policy"
                             else f"{k} thread{'s' if k == '2' else ''}")
                    row = {"row": f"threads · {phase} · one eigvalsh 1024² f64 (s per call), {label}",
                           "kind": "threads",
                           "wall_s": v["median_s"], "verdict": "—",
                           "notes": f"median of {v['reps']} (min {v['min_s']:.3f} s); load avg "
                                    f"{ph['loadavg'][0]:.2f}" + (" ; busy process on one core" if phase == "loaded"
                                                                 else "")}
                row["load_before"] = ph["loadavg"]
                self.add(row)
        self.rows[-1]["notes"] += f"; child peak RSS {r['peak_rss_mb']:.0f} MB"


#: child: times eigvalsh with 1, 2 and geomlib's chosen threads, quiet then with a busy process on one core
THREADS_PROBE = r"""
import json, os, statistics, subprocess, sys, time
import torch
out, wait = sys.argv[1], float(sys.argv[2])
res = {"cpu_count": os.cpu_count(), "torch_default_threads": torch.get_num_threads()}
try:
    from geomlib.threads import apply_threads, choose_threads
except ImportError as exc:
    choose_threads = None
    res["policy_error"] = f"ImportError: {exc}"
g = torch.Generator().manual_seed(0)
A = torch.randn(1024, 1024, generator=g, dtype=torch.float64)
A = (A + A.T) / 2
REPS = 7

def bench(n):
    if n is not None:
        torch.set_num_threads(n)
    torch.linalg.eigvalsh(A)  # warm-up
    ts = []
    for _ in range(REPS):
        t = time.perf_counter()
        torch.linalg.eigvalsh(A)
        ts.append(time.perf_counter() - t)
    return {"threads": torch.get_num_threads(), "median_s": statistics.median(ts), "min_s": min(ts), "reps": REPS}

def phase():
    r = {"loadavg": os.getloadavg()}
    if choose_threads is not None:
        try:
            n = choose_threads()
            apply_threads(n)
            r["policy"] = {"chosen": n, **bench(None)}
        except Exception as exc:
            res["policy_error"] = f"{type(exc).__name__}: {exc}"
    r["1"] = bench(1)
    r["2"] = bench(2)
    return r

res["quiet"] = phase()
busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
try:
    time.sleep(wait)
    res["loaded"] = phase()
finally:
    busy.kill()
    busy.wait()
json.dump(res, open(out, "w"), indent=1)
"""

# ----------------------------------------------------------------------------------------------- output


def _pkg_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*a: str) -> str | None:
    r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def table(rows: list[dict]) -> list[str]:
    """The markdown table; an "extrapolated to full depth" column appears when a depth was cut."""
    cell = lambda v: str(v).replace("|", "\\|")  # noqa: E731  (a pipe would end the cell)
    extra = any(r.get("extrapolated") for r in rows)
    cols = ["row", "wall s", "CPU s", "peak RSS MB", "bytes read (×ckpt)"]
    cols += ["EXTRAPOLATED to full depth (not measured)"] if extra else []
    cols += ["target", "PASS/FAIL", "notes"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        rb, ratio = r.get("read_bytes"), r.get("bytes_ratio")
        if rb is None:
            b = "n/a"
        else:
            b = f"{rb / 1e9:.2f} GB" + (f" ({ratio:.2f}×)" if ratio is not None else "")
        wall = fmt(r.get("wall_s"), 3 if r.get("kind") == "threads" else 1)
        cells = [cell(r["row"]), wall, fmt(r.get("cpu_s")), fmt(r.get("peak_rss_mb"), 0), b]
        if extra:
            ex = r.get("extrapolated")
            if ex:
                eb = ex.get("read_bytes")
                eb = "read n/a" if eb is None else f"read {eb / 1e9:.2f} GB ({ex['bytes_ratio']:.2f}× the "
                eb += "" if ex.get("read_bytes") is None else f"{ex['ckpt_bytes'] / 1e9:.2f} GB ckpt)"
                cells.append(f"**extrapolated** to {ex['layers']} layers: wall {fmt(ex['wall_s'])} s, "
                             f"CPU {fmt(ex['cpu_s'])} s, peak RSS {fmt(ex['peak_rss_mb'], 0)} MB, {eb}; "
                             f"{cell(ex['method'])}")
            else:
                cells.append("")
        cells += [cell(r.get("target", "—")), r.get("verdict", "—"), cell(r.get("notes", ""))]
        out.append("| " + " | ".join(cells) + " |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--only", default="06b,4b,demo,threads",
                    help="comma-separated rows: 06b, 4b, demo, threads (and dashboard, like --dashboard)")
    ap.add_argument("--layers-06b", type=int, default=28, help="depth of the Qwen3-0.6B-shaped checkpoint")
    ap.add_argument("--layers-4b", type=int, default=36, help="depth of the Qwen3-4B-shaped checkpoint")
    ap.add_argument("--keep", type=Path, help="directory where checkpoints are written, reused and kept "
                                               "(default: a temporary directory under /tmp, deleted at the end)")
    ap.add_argument("--threads", type=int, help="passed to geomlib as --threads N (omitted if it lacks the flag)")
    ap.add_argument("--dashboard", action="store_true", help="also run benchmarks/dashboard_latency.py")
    ap.add_argument("--shard-mb", type=int, default=2048, help="shard size of the 4B-shaped checkpoint")
    ap.add_argument("--extrapolate", choices=("proportional", "fit"), default="proportional",
                    help="when a depth is cut (--layers-*): per-layer slope of the run (wall, CPU, bytes x full/N; "
                         "peak RSS as measured), or a linear fit through a second run at half the depth (N >= 4)")
    ap.add_argument("--load-wait-s", type=float, default=3.0,
                    help="seconds the busy process runs before the loaded thread measurements")
    ap.add_argument("--no-mem-guard", dest="mem_guard", action="store_false",
                    help="run the seeds' way even when its estimated peak RSS exceeds 85%% of MemAvailable")
    ap.add_argument("--timeout-s", type=float, default=0, help="kill a child after this many seconds (0: never)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - {"06b", "4b", "demo", "threads", "dashboard"}
    if unknown:
        ap.error(f"unknown --only item(s): {', '.join(sorted(unknown))}")
    if args.dashboard:
        only.add("dashboard")

    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="compute_speed-", dir=args.keep))
        ckdir = args.keep.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="compute_speed-", dir="/tmp"))
        ckdir = work
    bench = Bench(args, ckdir, work)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_start = os.getloadavg()
    iocheck: dict = {"read_bytes_reflects_eviction": False}
    try:
        iocheck = io_selfcheck(work, bench.runner)
        print(f"read_bytes self-check: {iocheck}", flush=True)
        for shape in ("06b", "4b"):
            if shape in only:
                print(f"\n== {SHAPES[shape]} ==", flush=True)
                bench.shape(shape)
        if "demo" in only:
            print("\n== demo ==", flush=True)
            bench.demo()
        if "threads" in only:
            print("\n== threads ==", flush=True)
            bench.threads()
        if "dashboard" in only:
            print("\n== dashboard ==", flush=True)
            bench.dashboard()
    finally:
        keep_logs = any(r.get("rc") for r in bench.rows)
        if not args.keep:
            if keep_logs:  # keep the logs of failed children, drop the big files
                for p in work.iterdir():
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    elif not p.name.startswith("log-"):
                        p.unlink(missing_ok=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
        elif not keep_logs:
            shutil.rmtree(work, ignore_errors=True)

    meta = {
        "date": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "machine": platform.machine(),
                    "processor": platform.processor(), "cpu_count": os.cpu_count(),
                    "affinity": len(os.sched_getaffinity(0)),
                    "mem_total_gb": round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)},
        "python": platform.python_version(), "torch": _pkg_version("torch"),
        "transformers": _pkg_version("transformers"), "geomlib": _pkg_version("geomlib"),
        "git_head": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain", "geomlib")),
        "threads": {"requested": args.threads, "geomlib_flag": bench.threads_note,
                    "torch_default": getattr(bench, "thread_result", {}).get("torch_default_threads")},
        "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "thread_env": {k: os.environ.get(k) for k in ("GEOMLIB_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                      "OPENBLAS_NUM_THREADS")},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "read_bytes_selfcheck": iocheck, "targets": TARGETS,
        "logs_kept": str(work) if work.exists() else None,
    }
    result = {"meta": meta, "checkpoints": bench.checkpoints, "rows": bench.rows,
              "threads_probe": getattr(bench, "thread_result", None)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compute_speed.json").write_text(json.dumps(result, indent=1, default=str))

    m = meta["machine"]
    md = [f"# geomlib compute speed ({meta['date']})", "",
          f"{m['machine']}, {m['cpu_count']} cores ({m['affinity']} usable), {m['mem_total_gb']} GB RAM; "
          f"Python {meta['python']}, torch {meta['torch']}, transformers {meta['transformers']}; "
          f"geomlib {meta['geomlib']} @ {str(meta['git_head'])[:10]}"
          f"{' (geomlib/ modified)' if meta['git_dirty'] else ''}; "
          f"threads: {args.threads if args.threads is not None else 'default'}"
          + (f" ({bench.threads_note})" if bench.threads_note else "")
          + f"; load avg {load_start[0]:.2f} at start, {meta['load_avg_end'][0]:.2f} at end.", "",
          "Bytes read: `read_bytes` of /proc/self/io of the child after evicting the checkpoint from the page cache"
          + ("." if iocheck["read_bytes_reflects_eviction"] else
             " — **n/a: read_bytes did not reflect the eviction in the self-check**."), ""]
    md += table(bench.rows)
    if bench.checkpoints:
        md += ["", "| checkpoint | size | files | written |", "|---|---|---|---|"]
        for k, c in bench.checkpoints.items():
            md.append(f"| {k} | {c.get('bytes', 0) / 1e9:.2f} GB | {len(c.get('files', []))} | {c.get('written')} |")
    (RESULTS / "compute_speed.md").write_text("\n".join(md) + "\n")
    print("\n" + "\n".join(md))
    if meta["logs_kept"]:
        print(f"\nlogs of the children (one failed) kept in {meta['logs_kept']}")
    failed = [r["row"] for r in bench.rows if str(r.get("verdict", "")).startswith("FAIL")]
    if failed:
        print(f"\nFAIL: {len(failed)} row(s): " + "; ".join(failed))
    return 1 if (args.strict and failed) else 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--as-child":
        _child_main(sys.argv[2:])
    else:
        sys.exit(main())
