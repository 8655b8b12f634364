"""Seed 004 (γ directions) the seeds' way: a minimal, faithful re-implementation for compute_speed.py.

What /work/shared/seeds/seed004_gamma_directions.py computes, and how: the whole model is loaded with
``AutoModelForCausalLM.from_pretrained`` in float32 on the CPU, the ``input_layernorm`` gains γ_L are
stacked, then their norms, unit directions, cosine matrix, PCA of the centered unit vectors and
``proj_top1`` (unit γ_L on PC1) are computed in numpy (float32, as in the seed).  Differences from the seed:
no ``trust_remote_code`` (qwen3 is native), the per-phase table (Qwen3-32B boundaries) and the prints are
left out; the JSON holds what the seed saves.

    python benchmarks/seeds_way/seed004_way.py --model DIR --out OUT.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    m = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, device_map="cpu")
    n = m.config.num_hidden_layers
    gammas = np.stack([m.model.layers[L].input_layernorm.weight.detach().float().cpu().numpy() for L in range(n)])
    del m

    norms = np.linalg.norm(gammas, axis=1)
    units = gammas / norms[:, None]
    cos_mat = units @ units.T
    _, S, Vt = np.linalg.svd(units - units.mean(axis=0, keepdims=True), full_matrices=False)
    explained = S**2 / (S**2).sum()
    proj_top1 = units @ Vt[0]

    with open(args.out, "w") as f:
        json.dump({"model": args.model, "num_layers": n, "norms": norms.tolist(), "proj_top1": proj_top1.tolist(),
                   "explained_var": explained.tolist(),
                   "cos_adjacent": [float(cos_mat[L, L + 1]) for L in range(n - 1)]}, f, indent=1)
    print(f"seed004_way: {n} layers -> {args.out}")


if __name__ == "__main__":
    main()
