"""The ``geomlib`` command line.

Bad input exits with status 2 and one sentence on stderr, never a traceback;
the cache is written atomically, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import GeomlibError, InvalidArgumentError

SOURCE_HELP = "demo:smollm2-135m, demo:minilm-l6, a model directory, a .gguf file or org/name[@rev]"


def _cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import open_model

    with open_model(args.source, hf_cache_dir=args.hf_cache) as ckpt:
        facts = ckpt.summary()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _phases(text: str | None) -> tuple[list[int] | None, list[str] | None]:
    """``--phases 7,10,32`` or ``--phases A:0,B:7,C:10`` -> (boundaries, names)."""
    if not text:
        return None, None
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        if all(":" in t for t in items):
            pairs = [(n.strip(), int(s)) for n, s in (t.split(":", 1) for t in items)]
            pairs.sort(key=lambda p: p[1])
            if pairs[0][1] != 0:
                raise ValueError
            return [s for _, s in pairs[1:]], [n for n, _ in pairs]
        return [int(t) for t in items], None
    except ValueError:
        raise InvalidArgumentError(
            f"--phases {text!r} is not understood; give the first layer of each later phase (7,10,32) "
            "or named starts beginning at 0 (A:0,B:7,C:10)"
        ) from None


def _compute_kwargs(args: argparse.Namespace) -> dict:
    boundaries, names = _phases(args.phases)
    return dict(
        cache_dir=args.cache,
        device=args.device,
        phases=boundaries,
        phase_names=names,
        progress=not args.quiet,
        aligned_pairs=args.aligned_pairs,
        null_draws=args.null_draws,
        seed=args.seed,
    )


def _cmd_compute(args: argparse.Namespace) -> int:
    from .dataset import compute

    ds = compute(args.source, force=args.force, hf_cache_dir=args.hf_cache, **_compute_kwargs(args))
    from .dataset import cache

    root = cache.cache_root(args.cache)
    print(f"{args.source}: {', '.join(ds.attrs['analyses'].split(','))} cached under {root}")
    if ds.attrs.get("warnings"):
        print("warnings:\n  - " + "\n  - ".join(str(ds.attrs["warnings"]).splitlines()))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .dataset import cache

    rows = cache.entries(args.cache)
    if not rows:
        print(f"no cached datasets under {cache.cache_root(args.cache)}")
        return 0
    for e in rows:
        a = e.attrs
        print(f"{e.label:<60} {e.analysis:<8} {str(a.get('created', '')):<26} {e.path}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .dataset import load
    from .dataset.report import render

    kw = _compute_kwargs(args)
    # parameters left at their defaults must not exclude entries computed with other ones
    params = {k: kw.pop(k) for k in ("aligned_pairs", "null_draws", "seed")}
    explicit = {k: v for k, v in params.items() if v is not None}
    ds = load(args.source, **kw, **explicit)
    sys.stdout.write(render(ds))
    return 0


def _add_compute_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--cache", metavar="DIR", help="cache directory (default: $GEOMLIB_CACHE or ./cache)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    p.add_argument("--aligned-pairs", choices=("adjacent", "all"), default="adjacent" if defaults else None,
                   help="pairs whose Procrustes-aligned cos-sim is computed (default: adjacent)")
    p.add_argument("--null-draws", type=int, default=8 if defaults else None, metavar="N",
                   help="seeded draws per null baseline, 0 to skip (default: 8)")
    p.add_argument("--seed", type=int, default=0 if defaults else None, help="seed of the null draws (default: 0)")
    p.add_argument("--phases", metavar="SPEC",
                   help="phase boundaries: first layer of each later phase (7,10,32) or named (A:0,B:7,C:10); "
                        "default: the seeds' presets / fractional rule")
    p.add_argument("--hf-cache", metavar="DIR", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geomlib", description="Inter-layer weight geometry of transformer checkpoints.")
    p.add_argument("--version", action="version", version=f"geomlib {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="print a checkpoint's architecture facts (reads headers only)",
                          description="Open SOURCE lazily and print its architecture facts; no weights are read.")
    info.add_argument("source", help=SOURCE_HELP)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--hf-cache", metavar="DIR", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    info.set_defaults(func=_cmd_info)

    comp = sub.add_parser("compute", help="compute the weight geometry of SOURCE into the cache",
                          description="Stream SOURCE layer by layer and cache its weight geometry as netCDF.")
    _add_compute_options(comp, defaults=True)
    comp.add_argument("--force", action="store_true", help="recompute even if a valid cache entry exists")
    comp.set_defaults(func=_cmd_compute)

    lst = sub.add_parser("list", help="list the cached datasets")
    lst.add_argument("--cache", metavar="DIR", help="cache directory (default: $GEOMLIB_CACHE or ./cache)")
    lst.set_defaults(func=_cmd_list)

    rep = sub.add_parser("report", help="print the seeds' tables and verdicts with null bands",
                         description="Print the seeds' tables for SOURCE from the cache (computing what is missing).")
    _add_compute_options(rep, defaults=False)
    rep.set_defaults(func=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GeomlibError as exc:
        print(f"geomlib: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geomlib: interrupted (nothing half-written was left in the cache)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `geomlib report ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
