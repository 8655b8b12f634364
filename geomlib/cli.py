"""The ``geomlib`` command line.

Bad input exits with status 2 and one sentence on stderr, never a traceback;
the cache is written atomically, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from . import __version__
from .errors import GeomlibError, InvalidArgumentError

#: ``geomlib export --width`` / ``--scale`` choices (the same as geomlib.plot.paper.PAPER / geomlib.plot.spec.SCALES)
EXPORT_WIDTHS = ("column", "page")
EXPORT_SCALES = ("symmetric", "robust", "z")
SOURCE_HELP = "demo:smollm2-135m, demo:minilm-l6, a model directory, a .gguf file or org/name[@rev]"


def _cmd_info(args: argparse.Namespace) -> int:
    from .model import open_model

    with open_model(args.source, hf_cache_dir=args.hf_cache) as ckpt:
        facts = ckpt.summary()
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        width = max(map(len, facts))
        for key, value in facts.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _phases(text: str | None) -> tuple[str | list[int] | None, list[str] | None]:
    """``--phases auto|seed``, ``--phases 7,10,32`` or ``--phases A:0,B:7,C:10`` -> (spec, names)."""
    if not text:
        return None, None
    if text.strip().lower() in ("auto", "seed"):
        return text.strip().lower(), None
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
            f"--phases {text!r} is not understood; give auto, seed, the first layer of each later phase "
            "(7,10,32) or named starts beginning at 0 (A:0,B:7,C:10)"
        ) from None


def _analysis_params(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, dict]:
    """``--heads.k 8`` -> ``{"heads": {"k": 8}}``: only flags that were given, for the selected analyses.

    A flag of an analysis that was not selected has nothing to change and is dropped, so
    ``report`` does not exclude cache entries computed with other values.
    """
    from .analyses import registry

    out: dict[str, dict] = {}
    for a in names:
        for p in registry.get(a).params:
            v = getattr(args, f"{a}.{p.name}", None)
            if v is not None:
                out.setdefault(a, {})[p.name] = v
    return out


def _compute_kwargs(args: argparse.Namespace) -> dict:
    from .analyses import registry

    boundaries, names = _phases(args.phases)
    analyses = registry.resolve(args.analyses) if args.analyses else registry.defaults()
    return dict(analyses=analyses, cache_dir=args.cache, phases=boundaries, phase_names=names,
                n_phases=args.n_phases, **_analysis_params(args, analyses))


def _threads(args: argparse.Namespace) -> int | None:
    """``--threads N`` as a checked count (None: geomlib's policy), before any work."""
    from .threads import check_threads

    text = getattr(args, "threads", None)
    if text is None:
        return None
    try:
        n = int(text)
    except ValueError:
        raise InvalidArgumentError(
            f"--threads {text!r} is not a thread count; pass a whole number of at least 1 (e.g. --threads 2), "
            "or leave it out to let geomlib choose from the free cores"
        ) from None
    return check_threads(n, "--threads")


def _cmd_compute(args: argparse.Namespace) -> int:
    from .readahead import start

    start(args.source)  # the disk reads the checkpoint while torch is imported
    from .store import cache, compute

    threads = _threads(args)
    ds = compute(args.source, force=args.force, hf_cache_dir=args.hf_cache, device=args.device,
                 progress=not args.quiet, threads=threads, **_compute_kwargs(args))
    print(f"{args.source}: {', '.join(ds.attrs['analyses'].split(','))} cached under {cache.cache_root(args.cache)}")
    if ds.attrs.get("warnings"):
        print("warnings:\n  - " + "\n  - ".join(str(ds.attrs["warnings"]).splitlines()))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from .store import cache

    rows, bad = cache.scan(args.cache)
    if not rows and not bad:
        print(f"no cached datasets under {cache.cache_root(args.cache)}")
        return 0
    for e in rows:
        print(f"{e.label:<60} {e.analysis:<8} {str(e.attrs.get('created', '')):<26} {e.path}")
    for d in bad:  # the intact entries are still listed above; each damaged one is named on stderr
        print(f"geomlib: warning: {d.message} (geomlib cache clean removes it)", file=sys.stderr)
    return 0


def _cmd_cache_verify(args: argparse.Namespace) -> int:
    from .store import cache

    rows, bad = cache.scan(args.cache)
    root = cache.cache_root(args.cache)
    for d in bad:
        print(f"damaged  {d.path}: {d.reason}")
    print(f"{len(rows)} intact, {len(bad)} damaged entr{'y' if len(bad) == 1 else 'ies'} under {root}"
          + ("; `geomlib cache clean` removes the damaged ones, `geomlib compute SOURCE --force` recomputes"
             if bad else ""))
    return 1 if bad else 0


def _cmd_cache_clean(args: argparse.Namespace) -> int:
    from .store import cache

    _, bad = cache.scan(args.cache)
    victims = [(d.path, d.reason) for d in bad]
    victims += [(p, "a leftover temporary file" if p.name.startswith(".tmp-") else "a checksum record without its entry")
                for p in cache.orphans(args.cache)]
    verb = "would remove" if args.dry_run else "removed"
    for path, why in victims:
        if not args.dry_run:
            cache.remove(path, cache.cache_root(args.cache))
        print(f"{verb}  {path}: {why}")
    print(f"{verb} {len(victims)} file{'' if len(victims) == 1 else 's'} under {cache.cache_root(args.cache)}"
          if victims else f"nothing to clean under {cache.cache_root(args.cache)}")
    return 0


def _check_against_model(args: argparse.Namespace, head: int | None = None,
                         pair: tuple[int, int] | None = None) -> None:
    """The layer and head flags against the model's headers: refused before computing what the cache lacks."""
    from .model import open_model

    with open_model(args.source, hf_cache_dir=args.hf_cache) as ckpt:
        n, H = ckpt.n_layers, ckpt.n_heads
    anchor = getattr(args, "anchor", None)
    if anchor is not None and not -n <= anchor < n:
        raise InvalidArgumentError(f"--anchor {anchor} is out of range for {n} layers; use 0..{n - 1} or -1")
    if head is not None and head >= H:
        raise InvalidArgumentError(f"--head {head} is out of range for {H} heads; use 0..{H - 1} or mean")
    if pair is not None and not all(0 <= x < n for x in pair):
        raise InvalidArgumentError(f"--pair {pair[0]},{pair[1]} is out of range for {n} layers; use 0..{n - 1}")


def _load_or_compute(args: argparse.Namespace, head: int | None = None, pair: tuple[int, int] | None = None):
    """The cached analyses of the source; the missing ones are computed first (that needs the weights)."""
    from .errors import SourceNotFoundError
    from .store import compute, load

    threads = _threads(args)  # a bad count is refused even when everything is cached
    kw = _compute_kwargs(args)
    try:
        return load(args.source, **kw)
    except SourceNotFoundError:
        _check_against_model(args, head, pair)
        return compute(args.source, hf_cache_dir=args.hf_cache, device=args.device, progress=not args.quiet,
                       threads=threads, **kw)


def _cmd_report(args: argparse.Namespace) -> int:
    from .analyses.report import render

    sys.stdout.write(render(_load_or_compute(args), anchor=args.anchor))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .plot.export import check_path, write
    from .plot.views import Selection

    check_path(args.output, args.format)  # before any work
    head = None if args.head is None else -1 if args.head == "mean" else _int(args.head, "--head")
    pair = None
    if args.pair:
        a, _, b = args.pair.partition(",")
        pair = (_int(a, "--pair"), _int(b, "--pair"))
    ds = _load_or_compute(args, head, pair)
    sel = Selection(anchor=args.anchor, family=args.family, phase=args.phase, operator=args.operator,
                    head=-1 if head is None else head, op_metric=args.metric, pair=pair, scale=args.scale,
                    mask_diagonal=args.mask_diagonal)
    _check_selection(ds, sel)
    path = write(ds, args.view, sel, args.format, args.output, narrow_head=head is not None,
                 narrow_pair=pair is not None, width=args.width)
    print(f"wrote {path}")
    return 0


def _int(text: str, flag: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgumentError(f"{flag} {text!r} is not an integer; pass e.g. {flag} 3") from None


def _check_selection(ds, sel) -> None:
    from .analyses.phases import phase_order

    n = ds.sizes["layer"]
    fams = [str(f) for f in ds["family"].values] if "family" in ds.dims else []
    if fams and sel.family not in fams:
        raise InvalidArgumentError(f"--family {sel.family!r} is not one of {', '.join(fams)}")
    if not -n <= sel.anchor < n:
        raise InvalidArgumentError(f"--anchor {sel.anchor} is out of range for {n} layers; use 0..{n - 1} or -1")
    if sel.phase != "all" and sel.phase not in phase_order(ds):
        raise InvalidArgumentError(f"--phase {sel.phase!r} is not one of all, {', '.join(phase_order(ds))}")
    H = ds.sizes.get("head", 0)
    if sel.head >= H:
        raise InvalidArgumentError(f"--head {sel.head} is out of range for {H} heads; use 0..{H - 1} or mean")
    if sel.pair is not None and not all(0 <= x < n for x in sel.pair):
        raise InvalidArgumentError(f"--pair {sel.pair} is out of range for {n} layers")


def _add_compute_options(p: argparse.ArgumentParser) -> None:
    from .analyses import registry

    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--analyses", metavar="LIST",
                   help=f"comma-separated subset of {', '.join(registry.names())} "
                        f"(default: {','.join(registry.defaults())})")
    p.add_argument("--cache", metavar="DIR", help="cache directory (default: $GEOMLIB_CACHE or ./cache)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu' or 'cuda'")
    p.add_argument("--phases", metavar="SPEC",
                   help="phases: 'auto' (default: change points of the attention-entropy profile, else of "
                        "a weight profile, number chosen by an extended BIC), 'seed' (the seeds' presets / "
                        "fractional rule), the first layer of each later phase (7,10,32) or named starts "
                        "(A:0,B:7,C:10)")
    p.add_argument("--n-phases", type=int, metavar="N",
                   help="number of automatic phases (default: chosen by an extended BIC, at most 8)")
    p.add_argument("--hf-cache", metavar="DIR", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    p.add_argument("--threads", metavar="N",
                   help="CPU threads for torch/BLAS (default: $GEOMLIB_THREADS or $OMP_NUM_THREADS when set, else "
                        "the cores not already busy: never more threads than free cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, thread or time-estimate lines")
    _add_analysis_flags(p)


def add_param_flags(p: argparse.ArgumentParser, specs, dest_prefix: str, title: str, flag_prefix: str = "",
                    description: str | None = None) -> None:
    """One argument group of flags ``--<flag_prefix><flag>`` (dest ``<dest_prefix><name>``), one per
    :class:`~geomlib.analyses.params.Param` in ``specs``; booleans get ``--no-`` forms; unset flags stay None."""
    g = p.add_argument_group(title, description)
    for prm in specs:
        flag, dest = f"--{flag_prefix}{prm.flag}", f"{dest_prefix}{prm.name}"
        default = "" if prm.default is None else f" (default: {prm.default})"
        if prm.type is bool:
            g.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                           help=prm.help + default)
        else:
            g.add_argument(flag, dest=dest, type=prm.type, choices=prm.choices, default=None,
                           metavar=None if prm.choices else prm.name.split("_")[-1].upper(),
                           help=prm.help + default)


def _add_analysis_flags(p: argparse.ArgumentParser) -> None:
    """One group of flags per registered analysis (``--gauge.null-draws``), from its parameter declarations."""
    from .analyses import registry

    for a in registry.names():
        an = registry.get(a)
        add_param_flags(p, an.params, f"{a}.", f"{a} analysis", f"{a}.", an.title)


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error contract for option values: one line on stderr, exit status 2.

    A command line without its command or positional arguments still gets the usage (that is its answer).
    """

    def error(self, message: str):
        if message.startswith("the following arguments are required") or "argument COMMAND" in message:
            super().error(message)
        self.exit(2, f"geomlib: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="geomlib", description="Inter-layer weight geometry of transformer checkpoints.")
    p.add_argument("--version", action="version", version=f"geomlib {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    info = sub.add_parser("info", help="print a checkpoint's architecture facts (reads headers only)",
                          description="Open SOURCE lazily and print its architecture facts; no weights are read.")
    info.add_argument("source", help=SOURCE_HELP)
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--hf-cache", metavar="DIR", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    info.set_defaults(func=_cmd_info)

    comp = sub.add_parser("compute", help="compute the analyses of SOURCE into the cache",
                          description="Stream SOURCE layer by layer and cache each analysis as netCDF "
                                      "(every registered analysis unless --analyses says otherwise).")
    _add_compute_options(comp)
    comp.add_argument("--force", action="store_true", help="recompute even if a valid cache entry exists")
    comp.set_defaults(func=_cmd_compute)

    lst = sub.add_parser("list", help="list the cached datasets")
    lst.add_argument("--cache", metavar="DIR", help="cache directory (default: $GEOMLIB_CACHE or ./cache)")
    lst.set_defaults(func=_cmd_list)

    cch = sub.add_parser("cache", help="check or repair the cache (verify checksums, clean damaged entries)",
                         description="verify: check every entry's checksum and parse it (exit 1 if any is damaged); "
                                     "clean: remove damaged entries, orphaned checksum records and temporary files "
                                     "left by dead writers.")
    cache_sub = cch.add_subparsers(dest="cache_command", required=True, metavar="ACTION", parser_class=_Parser)
    ver = cache_sub.add_parser("verify", help="check every entry (exit 1 if any is damaged)")
    ver.add_argument("--cache", metavar="DIR", help="cache directory (default: $GEOMLIB_CACHE or ./cache)")
    ver.set_defaults(func=_cmd_cache_verify)
    cln = cache_sub.add_parser("clean", help="remove damaged entries and leftovers")
    cln.add_argument("--cache", metavar="DIR", help="cache directory (default: $GEOMLIB_CACHE or ./cache)")
    cln.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    cln.set_defaults(func=_cmd_cache_clean)

    rep = sub.add_parser("report", help="print each analysis' tables and verdicts with null bands",
                         description="Print the tables of SOURCE's analyses from the cache (computing what is "
                                     "missing).")
    _add_compute_options(rep)
    rep.add_argument("--anchor", type=int, default=-1, metavar="L",
                     help="anchor layer of the per-head tables (default: -1, the last)")

    from .plot.names import FORMATS, VIEW_NAMES

    exp = sub.add_parser("export", help="export a dashboard view as PNG/SVG/PDF or its data as netCDF/CSV",
                         description="Export one view of SOURCE's cached analyses (computing what is missing), "
                                     "with a provenance caption, e.g. --view cos --family q_proj --format pdf -o fig.pdf")
    _add_compute_options(exp)
    exp.add_argument("--view", choices=list(VIEW_NAMES), default="cos", help="which view (default: cos)")
    exp.add_argument("--format", choices=list(FORMATS), help="output format (default: from the file suffix)")
    exp.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
    exp.add_argument("--family", default="q_proj", help="weight family (default: q_proj)")
    exp.add_argument("--anchor", type=int, default=-1, metavar="L", help="anchor layer (default: -1, the last)")
    exp.add_argument("--phase", default="all", help="phase to highlight (default: all)")
    from .analyses.heads import OPERATORS

    exp.add_argument("--operator", choices=tuple(OPERATORS), default="qk", help="per-head operator (default: qk)")
    exp.add_argument("--metric", choices=("cos", "pa_mean"), default="cos",
                     help="operator heatmap: cos-sim or principal-angle cosines (default: cos)")
    exp.add_argument("--head", help="a head index or 'mean' (default: mean); a data export then holds that head only")
    exp.add_argument("--pair", metavar="L,LB",
                     help="pair shown in the operator detail (default: the last adjacent pair); a data export then "
                          "holds that pair only")
    # literal choices: the parser must not import plotly (geomlib.plot.spec.SCALES and paper.PAPER; a test
    # keeps them equal)
    exp.add_argument("--width", choices=EXPORT_WIDTHS,
                     help="figure size for a paper: column (3.5 in) or page (7.2 in), a PNG then at 300 dpi "
                          "(default: screen size, as the dashboard)")
    exp.add_argument("--scale", choices=EXPORT_SCALES, default="symmetric",
                     help="colour range of the layer x layer heatmaps: symmetric (±max off-diagonal), robust "
                          "(2nd-98th percentile) or z (z-scores against the variable's null) (default: symmetric)")
    exp.add_argument("--mask-diagonal", action=argparse.BooleanOptionalAction, default=True,
                     help="blank the trivial diagonal of layer x layer heatmaps (default: masked)")
    exp.set_defaults(func=_cmd_export)
    rep.set_defaults(func=_cmd_report)

    from .cli_models import add_parsers

    add_parsers(sub, _add_analysis_flags)
    return p


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """geomlib's warnings as one ``geomlib: warning:`` line each (no source file, no code line).

    Only the format is replaced (not ``showwarning``), so recorders such as ``catch_warnings(record=True)``
    still see every warning.
    """
    from .errors import GeomlibWarning

    if not issubclass(category, GeomlibWarning):
        return _default_formatwarning(message, category, filename, lineno, line)
    return f"geomlib: warning: {str(message).strip()}\n"


_default_formatwarning = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shown, warnings.formatwarning = warnings.formatwarning, _format_warning
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
    finally:
        warnings.formatwarning = shown


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
