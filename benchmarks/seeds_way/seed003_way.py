"""Seed 003 (null residual) the seeds' way: a minimal, faithful re-implementation for compute_speed.py.

What /work/shared/seeds/seed003_null_residual.py computes, and how: the whole model is loaded with
``AutoModelForCausalLM.from_pretrained`` in bf16 on the CPU (eager attention), every layer's weights are
copied to float32 numpy and kept (all layers at once), then adjacent Frobenius cosines, normalized residual
norms, the per-family Frobenius scale track and the PCA of the log-scale track are computed in numpy.
Differences from the seed: no ``trust_remote_code`` (qwen3 is native in transformers), the tables are not
printed (their numbers go to the JSON), the residual SVD stays skipped as in the seed.

    python benchmarks/seeds_way/seed003_way.py --model DIR --out OUT.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from transformers import AutoModelForCausalLM

FAMILIES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
            "input_ln", "post_attn_ln", "q_norm", "k_norm"]


def frob(x):
    return float(np.linalg.norm(x))


def null_test_pair(A, B, families):
    """Adjacent-pair cos-sim and normalized residual norm per family (the seed's eff-rank/SVD stays skipped)."""
    out = {}
    for fam in families:
        if fam not in A or fam not in B or A[fam].shape != B[fam].shape:
            continue
        fa, fb = frob(A[fam]), frob(B[fam])
        if fa < 1e-12 or fb < 1e-12:
            continue
        cos = float((A[fam] * B[fam]).sum() / (fa * fb))
        out[fam] = {"cos": cos, "resid_norm": float(np.sqrt(max(2.0 - 2.0 * cos, 0.0))),
                    "resid_eff_rank": None, "resid_spec_entropy": None}
    return out


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, device_map="cpu",
                                                 attn_implementation="eager")
    n = model.config.num_hidden_layers
    f32 = lambda p: p.weight.detach().float().numpy()  # noqa: E731
    layers = {}
    for L in range(n):
        layer = model.model.layers[L]
        attn, mlp = layer.self_attn, layer.mlp
        entry = {"q_proj": f32(attn.q_proj), "k_proj": f32(attn.k_proj), "v_proj": f32(attn.v_proj),
                 "o_proj": f32(attn.o_proj), "gate_proj": f32(mlp.gate_proj), "up_proj": f32(mlp.up_proj),
                 "down_proj": f32(mlp.down_proj), "input_ln": f32(layer.input_layernorm),
                 "post_attn_ln": f32(layer.post_attention_layernorm)}
        for name in ("q_norm", "k_norm"):
            if getattr(attn, name, None) is not None:
                entry[name] = f32(getattr(attn, name))
        layers[L] = entry
    del model

    scales = {fam: [frob(layers[L][fam]) if fam in layers[L] else None for L in range(n)] for fam in FAMILIES}
    pair_results = [{"L": L, "L_next": L + 1, "families": null_test_pair(layers[L], layers[L + 1], FAMILIES)}
                    for L in range(n - 1)]

    summary = {}  # the seed's per-family table: mean/median cos, raw residual, scalar fit, improvement
    for fam in FAMILIES:
        cs = np.array([pr["families"][fam]["cos"] for pr in pair_results if fam in pr["families"]])
        if not len(cs):
            continue
        raw = np.sqrt(np.maximum(2.0 - 2.0 * cs, 0.0)).mean()
        fit = np.sqrt(np.maximum(1.0 - cs**2, 0.0)).mean()
        summary[fam] = {"mean_cos": float(cs.mean()), "median_cos": float(np.median(cs)), "raw_resid": float(raw),
                        "scalar_fit": float(fit), "improve_frac": float((raw - fit) / max(raw, 1e-12))}

    fam_used = [fam for fam in FAMILIES if all(v is not None for v in scales[fam])]
    sm = np.array([np.log(np.array(scales[fam])) for fam in fam_used])  # (families, layers)
    U, S, Vh = np.linalg.svd(sm - sm.mean(axis=1, keepdims=True), full_matrices=False)

    with open(args.out, "w") as f:
        json.dump({"model": args.model, "pair_results": pair_results, "summary": summary, "scales": scales,
                   "scale_pca_singvals": S.tolist(), "scale_pca_loadings": U.tolist(),
                   "scale_pca_scores": (np.diag(S) @ Vh).tolist(), "fam_used": fam_used}, f, indent=1)
    print(f"seed003_way: {n} layers -> {args.out}")


if __name__ == "__main__":
    main()
