"""Parameters and schema versions of the analyses (torch-free: the cache reads them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InvalidArgumentError

#: bump when the meaning or layout of any stored weights variable changes: old caches recompute
WEIGHTS_SCHEMA = 1

#: the smaller matrix side above which residual spectra are estimated by randomized subspace iteration
EXACT_SPECTRUM_MAX_DIM = 8192


@dataclass(frozen=True)
class WeightParams:
    """Parameters of the weight-level analysis (all of them enter the cache key).

    Attributes
    ----------
    aligned_pairs : {"adjacent", "all"}
        Pairs whose aligned cosine is computed; others are NaN.
    null_draws : int
        Seeded draws per null baseline (0 skips the baselines: NaN).
    seed : int
        Seed of the null draws.
    block_mib : int
        Memory budget (MiB) for the blocks of the Gram pass and the layers
        held by the all-pairs aligned pass.
    exact_spectrum_max_dim : int
        Residual spectra of matrices whose smaller side exceeds this are
        estimated by randomized subspace iteration.
    """

    aligned_pairs: str = "adjacent"
    null_draws: int = 8
    seed: int = 0
    block_mib: int = 256
    exact_spectrum_max_dim: int = EXACT_SPECTRUM_MAX_DIM

    def __post_init__(self) -> None:
        if self.aligned_pairs not in ("adjacent", "all"):
            raise InvalidArgumentError(
                f"aligned_pairs={self.aligned_pairs!r} is not a choice; use 'adjacent' (default) or 'all'"
            )
        for name in ("null_draws", "seed", "block_mib", "exact_spectrum_max_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "block_mib" else 0):
                raise InvalidArgumentError(
                    f"{name}={v!r} is not allowed; pass a non-negative integer (block_mib at least 1)"
                )
        if self.null_draws == 1:
            raise InvalidArgumentError("null_draws=1 gives no standard deviation; use 0 (skip) or at least 2")

    def as_dict(self) -> dict:
        return asdict(self)


#: bump when the meaning or layout of any stored heads variable changes
HEADS_SCHEMA = 1


@dataclass(frozen=True)
class HeadParams:
    """Parameters of the per-head operator analysis (all of them enter the cache key).

    Attributes
    ----------
    k : int
        Eigenvectors of the symmetric part kept per head for principal angles.
    null_draws : int
        Seeded random-Gaussian heads per null baseline (0 skips them: NaN).
    seed : int
        Seed of the null draws.
    block_mib : int
        Memory budget (MiB) for the layers held by the all-pairs gram pass.
    dynamic : bool
        Run the forward pass for attention entropy (``--no-dynamic`` skips it).
    text : str or None
        A text file to compute attention entropy on (default: the built-in
        public-domain text); it enters the cache key by content hash.
    max_tokens : int
        Tokens of the text used for the forward pass.
    """

    k: int = 8
    null_draws: int = 32
    seed: int = 0
    block_mib: int = 256
    dynamic: bool = True
    text: str | None = None
    max_tokens: int = 512

    def __post_init__(self) -> None:
        for name in ("k", "null_draws", "seed", "block_mib", "max_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name in ("k", "block_mib", "max_tokens")
                                                                   else 0):
                raise InvalidArgumentError(
                    f"{name}={v!r} is not allowed; pass a non-negative integer (k, block_mib, max_tokens at least 1)"
                )
        if self.null_draws == 1:
            raise InvalidArgumentError("null_draws=1 gives no standard deviation; use 0 (skip) or at least 2")
        if not isinstance(self.dynamic, bool):
            raise InvalidArgumentError(f"dynamic={self.dynamic!r} must be True or False")
        if self.text is not None:
            import os

            if not os.path.isfile(self.text):
                raise InvalidArgumentError(
                    f"text file {self.text!r} does not exist; pass a readable UTF-8 text file or omit it "
                    "to use the built-in text"
                )

    def as_dict(self) -> dict:
        d = asdict(self)
        if self.text is not None:
            # the cache key follows the text's content, not where the file lives
            import hashlib

            with open(self.text, "rb") as fh:
                d["text"] = "sha256:" + hashlib.sha256(fh.read()).hexdigest()
        return d


#: analysis name -> (parameter class, schema version, module that computes it)
ANALYSES: dict[str, tuple[type, int, str]] = {
    "weights": (WeightParams, WEIGHTS_SCHEMA, "weights"),
    "heads": (HeadParams, HEADS_SCHEMA, "heads"),
}
