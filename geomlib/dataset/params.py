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


#: analysis name -> (parameter class, schema version, module that computes it)
ANALYSES: dict[str, tuple[type, int, str]] = {"weights": (WeightParams, WEIGHTS_SCHEMA, "weights")}
