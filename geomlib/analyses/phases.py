"""Phase labels along depth, phase coordinates and per-phase summaries (xarray groupby).

Phases are fitted to the model by default: an exact change-point segmentation
(:mod:`geomlib.analyses.segment`) of its per-layer attention-entropy profile
(``attn_entropy``, layer × head, each layer's heads sorted by entropy) when the
dataset has one, of a weight profile otherwise.  Both profiles are invariant
to relabelling the heads of a layer, a symmetry of the network: the head
index is arbitrary, so no boundary may depend on it.  Boundaries fitted to
the entropy profile come with a bootstrap over the text windows the forward
pass read (``attn_entropy_windows``): ``phase_boundary_freq`` (per layer) and
the ``phase_bootstrap`` summary.  The seeds instead hard-coded "measured entropy boundaries" for two
models and a fractional rule for the rest; :func:`seed_phase` reproduces that
rule exactly and ``phases="seed"`` applies it.  :func:`phase_labels` applies
the seed rule or user-given boundaries to a whole model.

Phases are labels, not data: they are attached when a dataset is returned and
are not part of the cache key, so trying other boundaries never recomputes.
Torch-free.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Sequence

import numpy as np
import xarray as xr

from ..arch.families import NORM_FAMILIES
from ..errors import InvalidArgumentError
from ..validate import positive_int
from .segment import Segmentation, informative, segment

#: seed 000's tables: n_layers -> (model they were measured on, last layer of each phase)
PRESETS: dict[int, tuple[str, tuple[tuple[str, int], ...]]] = {
    64: ("Qwen3-32B", (("A", 6), ("B", 9), ("C", 31), ("D", 46), ("E", 58), ("tail", 63))),
    36: ("Qwen3-4B", (("A", 6), ("B", 9), ("C", 23), ("D", 33), ("tail", 35))),
}

#: seed 000's fractional rule for other depths: phase starts while L / n < bound
FRACTIONAL: tuple[tuple[str, float], ...] = (("A", 0.11), ("B", 0.15), ("C", 0.5), ("D", 0.75), ("E", 0.92))


def _require(obj, caller: str, *, dataset: bool = False, dims: Sequence[str] = (), coords: Sequence[str] = (),
             variables: Sequence[str] = (), fix: str = "") -> None:
    """One sentence if ``obj`` is not an xarray object with the dims, coordinates and variables ``caller`` reads.

    Without it a wrong dataset reaches xarray, whose KeyError names one missing key and not the function.
    ``dataset``: only a Dataset will do (implied by ``variables``).
    """
    dataset = dataset or bool(variables)
    kind = "Dataset" if dataset else "Dataset or DataArray"
    if not isinstance(obj, (xr.Dataset, xr.DataArray)) or (dataset and not isinstance(obj, xr.Dataset)):
        raise InvalidArgumentError(f"{caller} takes an xarray {kind} (from geomlib.compute or geomlib.load), "
                                   f"not {type(obj).__name__}")
    have_vars = set(map(str, obj.data_vars)) if isinstance(obj, xr.Dataset) else set()
    missing = ([f"dimension {d}" for d in dims if d not in obj.dims]
               + [f"coordinate {c}" for c in coords if c not in obj.coords]
               + [f"variable {v}" for v in variables if v not in have_vars])
    if missing:
        raise InvalidArgumentError(
            f"{caller} needs {', '.join(missing)}, which this {type(obj).__name__} lacks; "
            + (fix or "pass a dataset from geomlib.compute or geomlib.load")
        )


#: what to do about a dataset without phase labels
_APPLY = "label the layers first with apply_phases(ds) (geomlib.compute and geomlib.load do it)"


def seed_phase(L: int, n_layers: int) -> str:
    """Phase of layer ``L`` exactly as seed 000's ``phase_of`` assigns it.

    Raises
    ------
    InvalidArgumentError
        ``n_layers`` below 1, or ``L`` outside ``0..n_layers - 1``.
    """
    n_layers = positive_int("n_layers", n_layers)
    L = positive_int("L", L, 0, n_layers - 1)
    if n_layers in PRESETS:
        for name, last in PRESETS[n_layers][1]:
            if L <= last:
                return name
        return PRESETS[n_layers][1][-1][0]
    frac = L / n_layers
    for name, bound in FRACTIONAL:
        if frac < bound:
            return name
    return "tail"


def _names(k: int) -> list[str]:
    letters = [chr(ord("A") + i) for i in range(min(k, 26))]
    return letters + [f"P{i}" for i in range(26, k)]


def phase_labels(
    n_layers: int,
    boundaries: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> tuple[list[str], str, list[int]]:
    """Phase label of every layer.

    Parameters
    ----------
    n_layers : int
    boundaries : sequence of int, optional
        First layer of each phase after the first (``[7, 10, 32]`` makes phases
        0-6, 7-9, 10-31, 32-end).  Overrides the presets.
    names : sequence of str, optional
        One name per phase (default A, B, C, ...).

    Returns
    -------
    labels : list of str, one per layer
    method : str
        ``"user"``, ``"preset:Qwen3-32B"``, ``"preset:Qwen3-4B"`` or ``"fractional"``.
    starts : list of int
        First layer of each phase, 0 included.
    """
    n_layers = positive_int("n_layers", n_layers)
    if boundaries is None:
        labels = [seed_phase(L, n_layers) for L in range(n_layers)]
        method = f"preset:{PRESETS[n_layers][0]}" if n_layers in PRESETS else "fractional"
        starts = [L for L in range(n_layers) if L == 0 or labels[L] != labels[L - 1]]
        return labels, method, starts
    b = sorted(set(_boundaries(boundaries)) - {0})
    if any(not 0 < x < n_layers for x in b):
        raise InvalidArgumentError(
            f"phase boundaries {list(boundaries)} must lie in 1..{n_layers - 1} (first layer of each later phase) "
            f"for a {n_layers}-layer model; drop or fix the out-of-range ones"
        )
    starts = [0] + b
    names = _names(len(starts)) if names is None else _phase_names(names)
    if len(names) != len(starts) or len(set(names)) != len(names):
        raise InvalidArgumentError(
            f"{len(starts)} phases need {len(starts)} distinct names, got {list(names)}; pass one name per phase"
        )
    labels = []
    for L in range(n_layers):
        k = max(i for i, s in enumerate(starts) if s <= L)
        labels.append(str(names[k]))
    return labels, "user", starts


def _boundaries(boundaries) -> list[int]:
    """User boundaries as ints; anything else (a float, a string, a single number) in one sentence."""
    bad = InvalidArgumentError(
        f"phase boundaries {boundaries!r} are not a list of layer indices; pass the first layer of each later "
        "phase as integers, e.g. [7, 10, 32]"
    )
    if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
        raise bad
    out = []
    for x in boundaries:
        if isinstance(x, bool) or not isinstance(x, numbers.Integral):
            raise bad
        out.append(int(x))
    return out


def _phase_names(names) -> list[str]:
    """Phase names as a list of str; a lone string (whose letters would become names) is refused."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__iter__"):
        raise InvalidArgumentError(
            f"phase names {names!r} are not a list; pass one name per phase, e.g. ['early', 'late']"
        )
    return [str(x) for x in names]


#: defaults of the automatic phases: at most this many phases ...
AUTO_K_MAX = 8
#: ... of at least this many layers (with data) each
AUTO_MIN_SIZE = 2
#: ``attn_entropy`` is segmented when at least this fraction of the layers has a finite value
ENTROPY_MIN_COVERAGE = 0.5


def _kind(boundaries) -> str:
    """``"auto"``, ``"seed"`` or ``"user"`` for a phase spec."""
    if boundaries is None:
        return "auto"
    if isinstance(boundaries, str):
        key = boundaries.strip().lower()
        if key in ("auto", "seed"):
            return key
        raise InvalidArgumentError(
            f"phases={boundaries!r} is not a phase spec; pass 'auto' (default), 'seed' or the first layer "
            "of each later phase, e.g. [7, 10, 32]"
        )
    return "user"


def check_phase_spec(
    n_layers: int,
    boundaries: str | Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    n_phases: int | None = None,
    *,
    min_size: int = AUTO_MIN_SIZE,
) -> str:
    """Validate a phase spec before any data is read; return its kind (``"auto"``, ``"seed"``, ``"user"``).

    :func:`geomlib.compute` calls this first, so that a bad spec fails before
    the checkpoint is streamed.  Parameters as in :func:`apply_phases`.
    """
    n_layers = positive_int("n_layers", n_layers)
    min_size = positive_int("min_size", min_size)
    kind = _kind(boundaries)
    most = max(1, n_layers // min_size)
    if n_phases is not None:
        if kind != "auto":
            raise InvalidArgumentError(
                f"n_phases={n_phases!r} applies to automatic phases only, not to phases={boundaries!r}; "
                "drop n_phases or pass phases='auto'"
            )
        positive_int("n_phases", n_phases)
        if n_phases > most:
            raise InvalidArgumentError(
                f"n_phases={n_phases} phases of at least {min_size} layers do not fit in {n_layers} layers; "
                f"ask for at most {most}"
            )
    if kind == "seed":
        if names is not None:
            raise InvalidArgumentError(
                f"phase_names {list(names)} cannot rename the seed phases; pass boundaries with the names instead"
            )
    elif kind == "user":
        phase_labels(n_layers, boundaries, names)
    elif names is not None:
        names = _phase_names(names)
        if not names or len(set(names)) != len(names) or (n_phases is not None and len(names) != n_phases) \
                or len(names) > most:
            raise InvalidArgumentError(
                f"phase_names {names} must be distinct, at most {most} for {n_layers} layers"
                + (f" and {n_phases} for n_phases={n_phases}" if n_phases is not None else "")
                + "; with automatic phases their number sets the number of phases"
            )
    return kind


def head_invariant(X) -> np.ndarray:
    """Each layer's per-head values sorted ascending: features that no relabelling of heads can change.

    Parameters
    ----------
    X : array_like, shape (..., head)
        Per-head values (the last axis is the head axis); NaN for heads
        without a value.

    Returns
    -------
    ndarray, shape (..., head), float64
        ``out[..., j]`` is the ``j``-th smallest finite value of its row
        (NaN after the finite ones): the row's order statistics.

    Notes
    -----
    Sorting rather than quantiles: every layer of a checkpoint has the same
    number of heads, so the order statistics are the empirical quantiles at
    ``(j + ½)/H`` already, in nats and with one value per head, i.e. the same
    scale, N and penalty as the unsorted profile had.  The segment cost on
    sorted rows is ``H ×`` the squared 2-Wasserstein distance between each
    layer's distribution of head entropies and the segment's (the mean of
    sorted rows is the 1-D Wasserstein barycentre), so a boundary is a change
    of that distribution, whichever head carries which value.  Under GQA only
    permutations that respect the kv groups are symmetries; sorting is
    invariant to every permutation, so to those as well.
    """
    try:
        A = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"head_invariant takes numbers with the head axis last, not {type(X).__name__}; pass an array of "
            "per-head values"
        ) from None
    if A.ndim == 0:
        raise InvalidArgumentError("head_invariant takes an array with a head axis, not a scalar; pass an array "
                                   "of shape (..., head)")
    return np.sort(A, axis=-1)  # np.sort puts NaN last, whatever the order


def entropy_profile(ds: xr.Dataset) -> tuple[np.ndarray | None, str]:
    """The (layer, head rank) attention-entropy profile, or None and why it cannot be used.

    ``attn_entropy`` with each layer's heads sorted (:func:`head_invariant`).
    Usable when it exists and at least half of the layers
    (:data:`ENTROPY_MIN_COVERAGE`) have a finite value: with fewer, the
    boundaries would be set by the layers that happen to be measured.

    Returns
    -------
    X : ndarray, shape (layer, head), or None
    text : str
        What the profile is, or why there is none.
    """
    _require(ds, "entropy_profile", dataset=True)
    if "attn_entropy" not in ds.data_vars:
        return None, "no attn_entropy in the dataset"
    da = ds["attn_entropy"]
    if "layer" not in da.dims:
        return None, "attn_entropy has no layer dimension"
    n = ds.sizes["layer"]
    order = ("layer", ..., "head") if "head" in da.dims else ("layer", ...)
    X = head_invariant(np.asarray(da.transpose(*order).values, dtype=np.float64)).reshape(n, -1)
    have = int(np.isfinite(X).any(axis=1).sum())
    if have < max(2, int(np.ceil(ENTROPY_MIN_COVERAGE * n))):
        return None, f"attn_entropy is finite in {have}/{n} layers only (fewer than {ENTROPY_MIN_COVERAGE:.0%})"
    if not informative(X).any():
        return None, "attn_entropy does not vary along the layers (once each layer's heads are sorted)"
    return X, (f"attn_entropy: {n} layers × {X.shape[1]} heads sorted by entropy within each layer (feature j = "
               f"the layer's j-th smallest head entropy, invariant to relabelling heads), nats, not standardized, "
               f"finite in {have}/{n} layers")


def weight_profile(ds: xr.Dataset) -> tuple[np.ndarray | None, list[str]]:
    """The per-layer weight profile segmented when there is no usable entropy, and its column names.

    Columns: ``ln ‖W_L‖`` of every family (``scale``; the log because norms
    change multiplicatively along depth) and, for each norm family, the
    projection of the unit gain vector on its first principal direction
    (``gamma_proj_top1``, seed 004's per-layer direction coordinate).  These
    are the per-layer quantities the seeds tabulate by phase.  Both are
    whole-family quantities, invariant to relabelling the heads of a layer
    (a permutation of a matrix's rows or columns keeps its Frobenius norm;
    norm gains act on the hidden or head dimension, which a head relabelling
    does not touch); only ``(family, layer)`` variables are read, so no
    per-head variable can enter.  Pair
    quantities such as the adjacent cosines are left out: they dip *at* a
    boundary instead of stepping *across* it, which a piecewise-constant
    model does not describe.  The columns are in different units, so
    :func:`segment` z-scores them.
    """
    _require(ds, "weight_profile", dataset=True, dims=("layer",))
    cols, names = [], []
    n = ds.sizes["layer"]
    if "scale" in ds.data_vars and set(ds["scale"].dims) == {"family", "layer"}:
        sc = np.asarray(ds["scale"].transpose("layer", "family").values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(np.where(sc > 0, sc, np.nan))
        for i, f in enumerate(ds["scale"]["family"].values):
            cols.append(logs[:, i])
            names.append(f"ln scale {f}")
    if "gamma_proj_top1" in ds.data_vars and set(ds["gamma_proj_top1"].dims) == {"family", "layer"}:
        g = np.asarray(ds["gamma_proj_top1"].transpose("layer", "family").values, dtype=np.float64)
        for i, f in enumerate(ds["gamma_proj_top1"]["family"].values):
            cols.append(g[:, i])
            names.append(f"gamma_proj_top1 {f}")
    if not cols:
        return None, []
    X = np.column_stack(cols).reshape(n, -1)
    return (X, names) if informative(X).any() else (None, [])


def auto_phases(
    ds: xr.Dataset,
    n_phases: int | None = None,
    *,
    k_max: int = AUTO_K_MAX,
    min_size: int = AUTO_MIN_SIZE,
) -> tuple[list[int], str, str, str, Segmentation | None]:
    """Phase starts fitted by change-point segmentation.

    ``attn_entropy`` (layer × head, not standardized) when usable
    (:func:`entropy_profile`), else the weight profile (:func:`weight_profile`,
    z-scored); the number of phases is ``n_phases`` or minimises the extended
    BIC (:data:`~geomlib.analyses.segment.EBIC_FORMULA`) over ``1..k_max``.  With
    neither profile the seeds' rule applies (``n_phases`` cannot be honoured
    then, and is an error).

    Returns
    -------
    starts : list of int
        First layer of every phase, 0 included.
    method : str
        ``"changepoint:<entropy|weights>:<ebic|user-k>"``, or the seed method
        (``"preset:..."``, ``"fractional"``) when nothing could be segmented.
    criterion : str
        The model, the criterion with its value for every k, and the choice.
    profile : str
        What was segmented (or why nothing was).
    segmentation : Segmentation or None
    """
    _require(ds, "auto_phases", dataset=True, dims=("layer",))
    n = ds.sizes["layer"]
    X, why_not = entropy_profile(ds)
    if X is not None:
        seg = segment(X, n_phases, k_max=k_max, min_size=min_size, standardize=False)
        return list(seg.starts), f"changepoint:entropy:{seg.chosen_by}", seg.describe(), why_not, seg
    W, names = weight_profile(ds)
    if W is not None:
        seg = segment(W, n_phases, k_max=k_max, min_size=min_size, standardize=True)
        used = ", ".join(names[i] for i in seg.features)
        profile = f"weights ({why_not}): {used}; z-scored"
        return list(seg.starts), f"changepoint:weights:{seg.chosen_by}", seg.describe(), profile, seg
    if n_phases is not None:
        raise InvalidArgumentError(
            f"n_phases={n_phases} needs a profile to segment, but this dataset has neither a usable attn_entropy "
            f"({why_not}) nor the weight variables scale / gamma_proj_top1; pass boundaries or phases='seed'"
        )
    _, method, starts = phase_labels(n)
    return starts, method, _seed_criterion(n), f"nothing to segment ({why_not}; no varying weight profile)", None


#: bootstrap of automatic entropy phases: replicates, seed of numpy's default_rng, and the interval level
BOOTSTRAP_REPLICATES = 200
BOOTSTRAP_SEED = 0
BOOTSTRAP_LEVEL = 0.9
#: fewer text windows than this: no bootstrap (3 windows have only 10 distinct resamples)
BOOTSTRAP_MIN_WINDOWS = 4


def _seed_criterion(n_layers: int) -> str:
    if n_layers in PRESETS:
        return (f"seed 000's entropy boundaries measured on {PRESETS[n_layers][0]} ({n_layers} layers), "
                "applied by depth")
    return "seed 000's fractional rule: phases start where L/n reaches " + ", ".join(
        f"{b:g}" for _, b in FRACTIONAL)


def apply_phases(
    ds: xr.Dataset,
    boundaries: str | Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    n_phases: int | None = None,
    *,
    k_max: int = AUTO_K_MAX,
    min_size: int = AUTO_MIN_SIZE,
    replicates: int = BOOTSTRAP_REPLICATES,
    seed: int = BOOTSTRAP_SEED,
) -> xr.Dataset:
    """``ds`` with a ``phase`` coordinate on ``layer`` (and ``phase_b`` on ``layer_b``).

    Parameters
    ----------
    ds : xarray.Dataset
        Any dataset with a ``layer`` dimension.
    boundaries : {"auto", "seed"} or sequence of int, optional
        ``None`` / ``"auto"`` (default): fitted by :func:`auto_phases`:
        change-point segmentation of ``attn_entropy`` when present and
        finite in at least half of the layers, else of a weight profile.
        ``"seed"``: the seeds' presets (64 layers: Qwen3-32B, 36: Qwen3-4B)
        and their fractional rule otherwise.  A sequence: the first layer of
        each phase after the first (``[7, 10, 32]``).
    names : sequence of str, optional
        One name per phase (default A, B, C, ...; the seed phases keep
        theirs).  With automatic phases and no ``n_phases``, their number
        sets the number of phases.
    n_phases : int, optional
        Number of automatic phases; default: chosen by the extended BIC.
    k_max, min_size : int
        Largest number of phases the criterion considers, and the fewest layers (with
        data) in an automatic phase.
    replicates, seed : int
        The bootstrap of automatic entropy phases (:func:`bootstrap_phases`):
        resamples of the text windows (0: none) and the seed.  It runs here,
        each time phases are applied (200 replicates on 30 layers take a
        fraction of a second), and is never cached.

    Returns
    -------
    xarray.Dataset
        With ``attrs`` (also on the ``phase`` coordinate, without the prefix):
        ``phase_method`` (``"changepoint:entropy:ebic"``,
        ``"changepoint:weights:user-k"``, ``"preset:Qwen3-32B"``,
        ``"fractional"``, ``"user"``, ...), ``phase_starts`` (int64, first
        layer of each phase, 0 included), ``phase_names`` (comma-separated),
        ``phase_criterion`` (how the boundaries were found; for change points
        the formula, its value for every k and the chosen k),
        ``phase_profile`` (what was segmented) and, for change points,
        ``phase_sse`` / ``phase_ebic`` (float64 per k = 1..k_max, NaN where
        infeasible).  ``phase_bootstrap``: for automatic entropy phases, the
        bootstrap over text windows in one line ("boundary at 3 in 87% of
        200 bootstrap replicates (90% interval 2-4)", per fitted boundary,
        and how often each number of phases came out); otherwise a sentence
        beginning "no bootstrap: " that says why.  Coordinate
        ``phase_boundary_freq`` (float64 on ``layer``): the fraction of
        replicates in which a phase starts at each layer (1 at layer 0), NaN
        everywhere when there was no bootstrap.
    """
    _require(ds, "apply_phases", dataset=True, dims=("layer",))
    n = ds.sizes["layer"]
    kind = check_phase_spec(n, boundaries, names, n_phases, min_size=min_size)
    if not isinstance(replicates, (int, np.integer)) or isinstance(replicates, bool) or replicates < 0:
        raise InvalidArgumentError(f"replicates={replicates!r}; pass a number of bootstrap replicates, 0 for none")
    numbers: dict[str, np.ndarray] = {}
    freq = np.full(n, np.nan)
    boot_meta = {"replicates": 0, "seed": int(seed)}
    if kind == "seed":
        labels, method, starts = phase_labels(n)
        criterion, profile = _seed_criterion(n), "none (fixed rule)"
        boot = "no bootstrap: the seed rule places fixed boundaries"
    elif kind == "user":
        labels, method, starts = phase_labels(n, boundaries, names)
        criterion, profile = "boundaries given by the user", "none"
        boot = "no bootstrap: boundaries given by the user"
    else:
        want = n_phases if n_phases is not None else (len(names) if names is not None else None)
        starts, method, criterion, profile, seg = auto_phases(ds, want, k_max=k_max, min_size=min_size)
        if seg is None:
            labels = [seed_phase(L, n) for L in range(n)]
            boot = "no bootstrap: nothing was segmented"
        else:
            labels = phase_labels(n, starts[1:], names)[0]
            numbers = {"phase_sse": seg.sse, "phase_ebic": seg.ebic}
            if not method.startswith("changepoint:entropy"):
                boot = ("no bootstrap: the phases were fitted to the weight profile, a single measurement "
                        "(one checkpoint) with nothing to resample")
            else:
                from .phase_bootstrap import bootstrap_phases, window_profile  # it builds on this module

                windows, weights, boot = window_profile(ds)
                if windows is not None and replicates == 0:
                    boot = "no bootstrap: replicates=0"
                elif windows is not None:
                    res = bootstrap_phases(windows, weights, want, k_max=k_max, min_size=min_size,
                                           replicates=replicates, seed=seed)
                    freq, boot = res.freq, res.describe(starts)
                    boot_meta = {"replicates": int(replicates), "seed": int(seed)}
    meta = {"method": method, "starts": np.array(starts, dtype=np.int64), "criterion": criterion,
            "profile": profile, "bootstrap": boot}
    values = np.array(labels, dtype=object).astype(str)
    ds = ds.assign_coords(phase=xr.Variable("layer", values, attrs=meta))
    freq_attrs = {"description": "fraction of the bootstrap replicates (resampled text windows) in which a phase "
                                 "starts at this layer; NaN: no bootstrap (see phase_bootstrap)", **boot_meta}
    ds = ds.assign_coords(phase_boundary_freq=xr.Variable("layer", np.asarray(freq, dtype=np.float64),
                                                          attrs=freq_attrs))
    if "layer_b" in ds.dims:
        ds = ds.assign_coords(phase_b=xr.Variable("layer_b", values, attrs=meta))
    # a dataset that already went through apply_phases must not keep numbers of the previous spec
    for key in [k for k in ds.attrs if k.startswith("phase_")]:
        del ds.attrs[key]
    ds.attrs.update({f"phase_{k}": v for k, v in meta.items()})
    ds.attrs["phase_names"] = ",".join(dict.fromkeys(labels))
    ds.attrs.update(numbers)
    return ds


def adjacent(da: xr.DataArray) -> xr.DataArray:
    """The (layer, layer+1) diagonal of a (..., layer, layer_b) variable, indexed by the first layer."""
    _require(da, "adjacent", dims=("layer", "layer_b"), fix="pass a layer-pair variable such as ds['cos']")
    n = da.sizes["layer"]
    first = xr.DataArray(np.arange(n - 1), dims="layer")
    second = xr.DataArray(np.arange(1, n), dims="layer")
    out = da.isel(layer=first, layer_b=second)
    return out.drop_vars([c for c in ("layer_b", "phase_b") if c in out.coords])


def phase_order(ds: xr.Dataset | xr.DataArray) -> list[str]:
    """The phase names in depth order (each once)."""
    _require(ds, "phase_order", coords=("phase",), fix=_APPLY)
    return [str(p) for p in dict.fromkeys(ds["phase"].values.tolist())]


def phase_mean(da: xr.DataArray, order: Sequence[str] | None = None) -> xr.DataArray:
    """Mean over the layers of each phase (groupby on the ``phase`` coordinate), in depth order.

    ``order`` lists the phases to return (NaN for one with no layer here, e.g.
    a last phase holding only the last layer has no adjacent pair).
    """
    _require(da, "phase_mean", dims=("layer",), coords=("phase",), fix=_APPLY)
    order = list(order) if order is not None else phase_order(da)
    # the same numbers as da.groupby("phase").mean("layer").reindex(phase=order), a tenth of the time: the
    # dashboard asks for several on every family change
    labels = np.asarray(da["phase"].values).astype(str)
    values = np.moveaxis(np.asarray(da.values, dtype=float), da.get_axis_num("layer"), -1)
    out = np.full(values.shape[:-1] + (len(order),), np.nan)
    for k, p in enumerate(order):
        members = labels == str(p)
        if members.any():
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a phase whose values are all NaN stays NaN
                out[..., k] = np.nanmean(values[..., members], axis=-1)
    dims = [d for d in da.dims if d != "layer"]
    out = np.moveaxis(out, -1, da.get_axis_num("layer"))
    coords = {k: c.variable for k, c in da.coords.items() if "layer" not in c.dims}
    coords["phase"] = np.array(order, dtype=object)
    dims.insert(da.get_axis_num("layer"), "phase")
    return xr.DataArray(out, dims=dims, coords=coords, name=da.name, attrs=dict(da.attrs))


def phase_direction_stats(ds: xr.Dataset, family: str) -> xr.Dataset:
    """Seed 004's per-phase table for one norm family.

    Returns
    -------
    Dataset over ``phase`` with ``n`` (layers), ``norm_mean``, ``norm_std``,
    ``intra_cos`` (mean cosine between distinct layers of the phase, NaN for a
    one-layer phase) and ``vs_other_cos`` (mean cosine to layers of other phases).

    Raises
    ------
    InvalidArgumentError
        ``ds`` lacks the weights analysis' ``cos`` and ``gamma_norm`` or the
        phase labels, or ``family`` is not a norm family with gains in ``ds``
        (the message lists those that are).
    """
    _require(ds, "phase_direction_stats", dims=("family", "layer", "layer_b"), coords=("phase", "phase_b"),
             variables=("cos", "gamma_norm"),
             fix="pass the dataset geomlib.compute or geomlib.load returns for the weights analysis, which holds "
                 "both variables and the phase labels")
    valid = norm_families(ds)
    if family not in valid:
        raise InvalidArgumentError(
            f"family {family!r} has no norm gains in this dataset; phase_direction_stats takes a norm family, "
            + (f"one of {', '.join(valid)}" if valid else "and this model has none with data")
        )
    c = ds["cos"].sel(family=family)
    g = ds["gamma_norm"].sel(family=family)
    same = c["phase"] == c["phase_b"]
    distinct = c["layer"] != c["layer_b"]
    order = phase_order(ds)
    intra = c.where(same & distinct).groupby("phase").mean(["layer", "layer_b"]).sel(phase=order)
    other = c.where(~same).groupby("phase").mean(["layer", "layer_b"]).sel(phase=order)
    grouped = g.groupby("phase")
    return xr.Dataset(
        {
            "n": grouped.count("layer").sel(phase=order),
            "norm_mean": grouped.mean("layer").sel(phase=order),
            "norm_std": grouped.std("layer").sel(phase=order),
            "intra_cos": intra,
            "vs_other_cos": other,
        }
    )


def norm_families(ds: xr.Dataset) -> list[str]:
    """The norm families whose gains ``ds`` holds (finite ``gamma_norm`` in some layer), in dataset order."""
    if not isinstance(ds, xr.Dataset) or "gamma_norm" not in ds.data_vars or "family" not in ds["gamma_norm"].dims:
        return []
    g = ds["gamma_norm"]
    cos_fams = set(map(str, ds["cos"]["family"].values)) if "cos" in ds.data_vars else set()
    finite = np.isfinite(g.transpose("family", ...).values).reshape(g.sizes["family"], -1).any(axis=1)
    return [str(f) for f, ok in zip(g["family"].values, finite)
            if ok and str(f) in NORM_FAMILIES and (not cos_fams or str(f) in cos_fams)]
