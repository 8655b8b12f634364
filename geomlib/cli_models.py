"""The command line across models: ``geomlib compare``, ``geomlib sweep`` and ``geomlib requantize``.

Kept apart from :mod:`geomlib.cli` (one model at a time), which registers these
subcommands and owns the error contract: bad input exits 2 with one line.  A
sweep in which some checkpoints failed still writes the others and exits 1,
naming each failure on its own ``geomlib: error:`` line.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from .errors import InvalidArgumentError

SOURCE_HELP = "a model directory, a .gguf file, org/name[@rev] or demo:NAME"
CACHE_HELP = "cache directory (default: $GEOMLIB_CACHE or ./cache)"


# ------------------------------------------------------------------------------------------------- helpers
def _write_nc(ds, out: str | None) -> None:
    """``ds`` to the netCDF file ``out`` atomically (checked before any work by :func:`_check_out`)."""
    if out is None:
        return
    path = Path(out)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InvalidArgumentError(f"cannot write {path} ({exc.strerror or exc.__class__.__name__}); free space or "
                                   "choose another path") from None
    print(f"wrote {path}")


def _check_out(out: str | None) -> None:
    if out is None:
        return
    from .plot.export import check_path

    if check_path(out) != "netcdf":
        raise InvalidArgumentError(f"-o {out} must be a netCDF file ending in .nc (the whole Dataset is written)")


def _f(x: float) -> str:
    return "   nan" if x is None or not math.isfinite(x) else f"{x:6.3f}"


def _mean(da, dim: str) -> list[float]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row (a part not computed) stays NaN
        return [float(v) for v in da.mean(dim).values] if dim in da.dims else [float(v) for v in da.values]


def compare_lines(ds) -> list[str]:
    """A short table of a compare Dataset: each layer of A against its depth-corresponding layer of B."""
    a, b = ds.attrs.get("source_a", "A"), ds.attrs.get("source_b", "B")
    lines = [f"A = {a}", f"B = {b}", f"comparison: {ds.attrs.get('comparison', '?')}"]
    if "depth" in ds.dims:  # a depth-normalized profile: each model's adjacent-pair z against its own null
        lines.append("DEPTH-NORMALIZED PROFILE (the models differ in size; no layer of one is paired with the other)")
        lines.append(f"{'depth':>6}  {'MLP z (A)':>10} {'MLP z (B)':>10}  {'head z (A)':>10} {'head z (B)':>10}")
        for i, d in enumerate(ds["depth"].values):
            row = []
            for stem in ("mlp", "head"):
                v = ds.get(f"{stem}_adjacent_z")
                for m in ("a", "b"):
                    x = float("nan") if v is None else float(v.sel(model=m).isel(depth=i).mean())
                    row.append(f"{x:10.2f}")
            lines.append(f"{d:6.3f}  {row[0]} {row[1]}  {row[2]} {row[3]}")
        return lines
    corr = ds["null_layer_b"].values if "null_layer_b" in ds else range(ds.sizes["layer"])
    head = "layer  layer_b   raw   γ cos  MLP matched (null)   heads matched (null)"
    lines += ["each layer of A against the layer of B at the same relative depth; raw = index-paired, matched = "
              "after neuron/head matching (gauge-aware)", head]
    for L, Lb in enumerate(corr):
        Lb = int(Lb)
        pick = dict(layer=L, layer_b=Lb)
        raw = float(ds["raw_cos"].isel(pick).mean()) if "raw_cos" in ds else float("nan")
        gam = float(ds["gamma_cos"].isel(pick).mean()) if "gamma_cos" in ds else float("nan")
        mm = float(ds["mlp_matched_cos"].isel(pick).sel(mlp_view="mean")) if "mlp_matched_cos" in ds and \
            "mean" in ds["mlp_view"].values else float("nan")
        mn = float(ds["mlp_matched_null_mean"].isel(layer=L).sel(mlp_view="mean")) \
            if "mlp_matched_null_mean" in ds and "mean" in ds["mlp_view"].values else float("nan")
        hm = float(ds["head_matched_cos"].isel(pick).mean()) if "head_matched_cos" in ds else float("nan")
        hn = float(ds["head_matched_null_mean"].isel(layer=L).mean()) if "head_matched_null_mean" in ds \
            else float("nan")
        lines.append(f"{L:5d}  {Lb:7d}  {_f(raw)} {_f(gam)}  {_f(mm)} ({_f(mn)})      {_f(hm)} ({_f(hn)})")
    return lines


def sweep_lines(ds) -> list[str]:
    """A short table of a sweep: per checkpoint, how far its layers moved from the previous checkpoint."""
    lines = [f"sweep {ds.attrs.get('sweep_name')}: {ds.sizes['checkpoint']} checkpoints, analyses "
             f"{ds.attrs.get('analyses')}"]
    cols = [(v, label) for v, label in (("moved_raw_cos", "raw cos"), ("moved_mlp_matched_cos", "MLP matched"),
                                        ("moved_head_matched_cos", "heads matched")) if v in ds]
    if not cols:
        return lines
    lines.append("mean over layers of the cosine of each layer with itself one checkpoint earlier (1: did not move)")
    lines.append(f"{'checkpoint':<16} {'step':>8}  " + "  ".join(f"{label:>13}" for _, label in cols))
    for k, c in enumerate(ds["checkpoint"].values):
        vals = []
        for v, _ in cols:
            da = ds[v].isel(checkpoint=k)
            if "mlp_view" in da.dims:
                da = da.sel(mlp_view="mean") if "mean" in da["mlp_view"].values else da.mean("mlp_view")
            vals.append(float(da.mean()) if da.notnull().any() else float("nan"))
        step = int(ds["step"].values[k]) if "step" in ds.coords else -1
        lines.append(f"{str(c):<16} {step if step >= 0 else '':>8}  " + "  ".join(f"{_f(x):>13}" for x in vals))
    return lines


# ------------------------------------------------------------------------------------------------- commands
def _params(args: argparse.Namespace, specs, prefix: str) -> dict:
    return {p.name: getattr(args, f"{prefix}{p.name}") for p in specs
            if getattr(args, f"{prefix}{p.name}", None) is not None}


def _cmd_compare(args: argparse.Namespace) -> int:
    from .analyses.compare import PARAMS
    from .cli import _threads
    from .store import cache
    from .store.compare import compare

    _check_out(args.output)
    ds = compare(args.a, args.b, args.cache, device=args.device, progress=not args.quiet, force=args.force,
                 threads=_threads(args), hf_cache_dir=args.hf_cache, **_params(args, PARAMS, "compare."))
    print("\n".join(compare_lines(ds)))
    print(f"cached under {cache.cache_root(args.cache)}")
    if ds.attrs.get("warnings"):
        print("warnings:\n  - " + "\n  - ".join(str(ds.attrs["warnings"]).splitlines()))
    _write_nc(ds, args.output)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .analyses import registry
    from .analyses.compare import PARAMS
    from .cli import _analysis_params, _threads
    from .store import cache
    from .store.cluster import SERIAL
    from .store.sweep import SWEEP_PREFIX, sweep

    _check_out(args.output)
    names = registry.resolve(args.analyses) if args.analyses else registry.defaults(sweep=True)
    threads = _threads(args)
    serial = (args.scheduler or "").strip().lower() == SERIAL
    ds = sweep(args.sources, names, args.cache, revisions=args.revisions, labels=args.labels, steps=args.steps,
               name=args.name, compare=not args.no_compare, compare_params=_params(args, PARAMS, "compare."),
               scheduler=args.scheduler, workers=args.workers, memory_per_worker=args.memory_per_worker,
               device=args.device, progress=not args.quiet, force=args.force,
               threads=threads if threads is not None or serial else 1, hf_cache_dir=args.hf_cache,
               **_analysis_params(args, names))
    print("\n".join(sweep_lines(ds)))
    print(f"cached as {SWEEP_PREFIX}{ds.attrs['sweep_name']} under {cache.cache_root(args.cache)}")
    if ds.attrs.get("warnings"):
        print("warnings:\n  - " + "\n  - ".join(str(ds.attrs["warnings"]).splitlines()))
    _write_nc(ds, args.output)
    failed = [f for f in str(ds.attrs.get("failed", "")).splitlines() if f]
    for f in failed:
        print(f"geomlib: error: {f}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_requantize(args: argparse.Namespace) -> int:
    from .io.requantize import requantize

    path = requantize(args.source, args.output, args.type, hf_cache_dir=args.hf_cache, progress=not args.quiet,
                      overwrite=args.overwrite)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.type})")
    return 0


# ------------------------------------------------------------------------------------------------- parsers
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", metavar="DIR", help=CACHE_HELP)
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    p.add_argument("--hf-cache", metavar="DIR", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    p.add_argument("--force", action="store_true", help="recompute even if a valid cache entry exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or cluster lines")


def add_parsers(sub, analysis_flags) -> None:
    """Register ``compare``, ``sweep`` and ``requantize`` on the ``geomlib`` subparsers ``sub``.

    ``analysis_flags(parser)`` adds the per-analysis flags (``--gauge.null-draws``...) that ``compute`` has.
    """
    from .analyses import registry
    from .analyses.compare import PARAMS
    from .cli import add_param_flags

    cmp = sub.add_parser("compare", help="compare two checkpoints layer against layer (gauge-aware), cached",
                         description="Compare every layer of A with every layer of B (dims layer of A, layer_b of "
                                     "B): index-paired raw cosine, γ cosine, matched MLP and head cosines with a "
                                     "residual-rotation null. Models of one architecture but other sizes get a "
                                     "depth-normalized profile comparison instead (labelled as such).")
    cmp.add_argument("a", help="model A: " + SOURCE_HELP)
    cmp.add_argument("b", help="model B: " + SOURCE_HELP)
    _add_common(cmp)
    cmp.add_argument("--threads", metavar="N", help="CPU threads for torch/BLAS (default: the free cores)")
    cmp.add_argument("-o", "--output", metavar="FILE.nc", help="also write the Dataset to this netCDF file")
    add_param_flags(cmp, PARAMS, "compare.", "compare parameters")
    cmp.set_defaults(func=_cmd_compare)

    sw = sub.add_parser("sweep", help="analyse many checkpoints (a training run, revisions) on a Dask cluster",
                        description="Compute the analyses of every checkpoint and compare each with the previous "
                                    "one, as one Dataset with a checkpoint dimension. Tasks run on a Dask "
                                    "LocalCluster sized to this machine (or --scheduler ADDRESS, or "
                                    "$DASK_SCHEDULER_ADDRESS); each worker writes its own cache entries.")
    sw.add_argument("sources", nargs="+", metavar="SOURCE",
                    help="checkpoints in order (" + SOURCE_HELP + "), one hub id with --revisions, or a directory "
                         "with a sweep.json (scripts/train_demo_sweep.py writes one)")
    sw.add_argument("--revisions", metavar="LIST", help="revisions of the one hub id: step1000,step2000,...")
    sw.add_argument("--labels", metavar="LIST", help="one label per checkpoint (default: directory or revision)")
    sw.add_argument("--steps", metavar="LIST", help="training step of each checkpoint (default: read from names "
                                                     "such as step1000)")
    sw.add_argument("--name", help="the sweep's name in the cache (default: from the first source)")
    sw.add_argument("--no-compare", action="store_true", help="skip the compare of consecutive checkpoints")
    sw.add_argument("--scheduler", metavar="ADDR",
                    help="tcp://HOST:8786 (an existing Dask cluster), local (default: a LocalCluster) or serial "
                         "(this process)")
    sw.add_argument("--workers", type=int, metavar="N", help="local cluster worker processes (default: free cores, "
                                                             "as many as memory holds)")
    sw.add_argument("--memory-per-worker", default="2GiB", metavar="SIZE",
                    help="each local worker's memory limit (default: 2GiB)")
    sw.add_argument("--analyses", metavar="LIST",
                    help=f"comma-separated analyses (default: {','.join(registry.defaults(sweep=True))})")
    sw.add_argument("--threads", metavar="N", help="torch threads per task (default: 1 on a cluster, one task per "
                                                    "core; geomlib's policy with --scheduler serial)")
    sw.add_argument("-o", "--output", metavar="FILE.nc", help="also write the sweep Dataset to this netCDF file")
    _add_common(sw)
    add_param_flags(sw, PARAMS, "compare.", "compare parameters (consecutive checkpoints)", "compare.")
    analysis_flags(sw)
    sw.set_defaults(func=_cmd_sweep)

    rq = sub.add_parser("requantize", help="write a GGUF re-quantization of a checkpoint (Q8_0, Q4_0, ...)",
                        description="Stream SOURCE layer by layer into a GGUF file in llama.cpp's layout, its "
                                    "matrices quantized with the gguf package, e.g. to measure with geomlib "
                                    "compare how much of each metric survives quantization.")
    rq.add_argument("source", help=SOURCE_HELP)
    rq.add_argument("output", metavar="OUT.gguf", help="the GGUF file to write")
    from .io.requantize import QTYPES

    rq.add_argument("--type", default="Q8_0", metavar="TYPE", help=f"one of {', '.join(QTYPES)} (default: Q8_0)")
    rq.add_argument("--overwrite", action="store_true", help="replace OUT.gguf if it exists")
    rq.add_argument("--hf-cache", metavar="DIR", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    rq.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rq.set_defaults(func=_cmd_requantize)


__all__ = ["add_parsers", "compare_lines", "sweep_lines"]
