"""Cost of the ``gauge`` analysis: the demo models, a random Qwen3-0.6B-shaped checkpoint, and one
neuron matching at Qwen3-4B's MLP shape.

Each model run is a separate process (``geomlib compute ... --analyses gauge --force``) timed for wall
and CPU time and peak RSS; the Qwen3-shaped checkpoint is written first (random bf16 weights at the
real layer shapes, vocabulary cut to 1024 so the file stays ~0.9 GB).  Results go to
``benchmarks/results/gauge_cost.json`` and a markdown table on stdout.  Not a timed test.

    python benchmarks/gauge_cost.py [--skip-qwen] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

QWEN3_06B = dict(model_type="qwen3", architectures=["Qwen3ForCausalLM"], hidden_size=1024, intermediate_size=3072,
                 num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                 vocab_size=1024, max_position_embeddings=4096, rms_norm_eps=1e-6, rope_theta=1e6,
                 hidden_act="silu", tie_word_embeddings=True, torch_dtype="bfloat16")


def write_qwen3(path: Path, cfg: dict, seed: int = 0) -> Path:
    """A random bf16 checkpoint with ``cfg``'s shapes, written layer by layer into one safetensors file."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    h, i, d = cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def rnd(*shape, scale=0.02):
        return (torch.randn(*shape, generator=gen) * scale).to(torch.bfloat16)

    t = {"model.embed_tokens.weight": rnd(cfg["vocab_size"], h), "model.norm.weight": 1 + rnd(h, scale=0.1)}
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}."
        t.update({p + "self_attn.q_proj.weight": rnd(nq * d, h), p + "self_attn.k_proj.weight": rnd(nkv * d, h),
                  p + "self_attn.v_proj.weight": rnd(nkv * d, h), p + "self_attn.o_proj.weight": rnd(h, nq * d),
                  p + "self_attn.q_norm.weight": 1 + rnd(d, scale=0.1), p + "self_attn.k_norm.weight": 1 + rnd(d, scale=0.1),
                  p + "mlp.gate_proj.weight": rnd(i, h), p + "mlp.up_proj.weight": rnd(i, h),
                  p + "mlp.down_proj.weight": rnd(h, i), p + "input_layernorm.weight": 1 + rnd(h, scale=0.1),
                  p + "post_attention_layernorm.weight": 1 + rnd(h, scale=0.1)})
    path.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def timed(cmd: list[str], env: dict) -> dict:
    """Wall, CPU seconds and peak RSS (MB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round((after.ru_utime + after.ru_stime)
                                                     - (before.ru_utime + before.ru_stime), 1),
            "peak_rss_mb": round(after.ru_maxrss / 1024)}  # ru_maxrss of the largest child so far (Linux: kB)


def gauge_run(source: str, cache: Path, env: dict, pairs: str = "auto") -> dict:
    cmd = [sys.executable, "-m", "geomlib", "compute", source, "--analyses", "gauge", "--force", "-q",
           "--cache", str(cache), "--gauge.pairs", pairs]
    return timed(cmd, env)


MATCH_4B = """
import time, torch
from geomlib.metrics.matching import match_neurons
g = torch.Generator().manual_seed(0)
I, h = 9728, 2560
w = lambda: {"gate_proj": torch.randn(I, h, generator=g), "up_proj": torch.randn(I, h, generator=g),
             "down_proj": torch.randn(h, I, generator=g)}
a, b = w(), w()
t = time.perf_counter()
m = match_neurons(a, b, "signed")
print(round(time.perf_counter() - t, 1), m.matched_cos["mean"])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-qwen", action="store_true", help="only the demo models and the 4B-shape matching")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads of each run (default 1)")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "OPENBLAS_NUM_THREADS": str(args.threads)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for src in ("demo:minilm-l6", "demo:smollm2-135m"):
            rows.append({"model": src, "pairs": "auto", **gauge_run(src, tmp / "cache", env)})
            print(rows[-1], flush=True)
        if not args.skip_qwen:
            q = write_qwen3(tmp / "qwen3-0.6b-shape", QWEN3_06B)
            rows.append({"model": "random Qwen3-0.6B shape (28 x 1024, MLP 3072)", "pairs": "auto",
                         **gauge_run(str(q), tmp / "cache", env)})
            print(rows[-1], flush=True)
        t = timed([sys.executable, "-c", MATCH_4B], env)
        rows.append({"model": "one neuron matching at Qwen3-4B's MLP (9728 x 2560), float64", "pairs": "1 pair", **t})
        print(rows[-1], flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(), "threads": args.threads,
            "load_avg_at_end": os.getloadavg()[0]}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "gauge_cost.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\n{meta}\n\n| model | pairs | wall (s) | CPU (s) | peak RSS (MB) |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['pairs']} | {r['wall_s']} | {r['cpu_s']} | {r['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
