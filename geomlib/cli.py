"""The ``geomlib`` command line.

Bad input exits with status 2 and one sentence on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .errors import GeomlibError


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="geomlib",
        description="Inter-layer weight geometry of transformer checkpoints.",
    )
    p.add_argument("--version", action="version", version=f"geomlib {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser(
        "info",
        help="print a checkpoint's architecture facts (reads headers only)",
        description="Open SOURCE lazily and print its architecture facts; no weights are read.",
    )
    info.add_argument("source", help="demo:smollm2-135m, demo:minilm-l6, a model directory, a .gguf file or org/name[@rev]")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.add_argument("--hf-cache", metavar="DIR", help="Hugging Face hub cache to use (default: HF_HUB_CACHE)")
    info.set_defaults(func=_cmd_info)
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
        print("geomlib: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
