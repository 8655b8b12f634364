"""Weight-level similarity between two layers' matrices of one family.

Definitions (W_L : (n_out, n_in), float64):

* ``cos``        ⟨W_L, W_L'⟩_F / (‖W_L‖ ‖W_L'‖)
* ``resid_norm`` ‖W_L'/‖W_L'‖ − W_L/‖W_L‖‖_F  (= √(2 − 2cos); √2 for orthogonal layers)
* ``scalar_fit`` √(1 − cos²): the residual left after the best scalar fit of one
  unit matrix onto the other
* ``improve_frac`` (resid_norm − scalar_fit) / resid_norm  (seed 003)
* ``resid_eff_rank`` exp(H), H = entropy of the normalized σ² of the residual Δ
* ``aligned_cos`` max over orthogonal R acting on the residual-stream side of
  ⟨W_L R, W_L'⟩ / (‖W_L‖‖W_L'‖) = ‖W_Lᵀ W_L'‖_* / (‖W_L‖‖W_L'‖) (orthogonal
  Procrustes: the maximum of tr(Rᵀ M) over orthogonal R is M's nuclear norm)

Degenerate inputs (a zero matrix, NaN or Inf entries) give NaN, never 0.
"""

from __future__ import annotations

import math

import torch

from ..limits import EXACT_SPECTRUM_MAX_DIM
from .linalg import gram_eigvals, randomized_sq_singvals, spectral_entropy

#: leading singular values kept by the randomized estimate
RANDOMIZED_RANK = 512

NAN = math.nan
#: per-entry size below which a unit-norm residual is rounding noise (float64)
ZERO_RESIDUAL = 1e-13


#: entries per chunk of the float64 reductions over a layer (8 MB temporaries: a layer is never copied whole)
CHUNK_ENTRIES = 1 << 20


def row_chunks(x: torch.Tensor, entries: int | None = None) -> list[slice]:
    """Slices of ``x``'s first axis of about ``entries`` (default :data:`CHUNK_ENTRIES`) entries each
    (one slice for a vector)."""
    if x.ndim < 2:
        return [slice(None)]
    per_row = max(1, x[0].numel())
    step = max(1, (entries or CHUNK_ENTRIES) // per_row)
    return [slice(r, r + step) for r in range(0, x.shape[0], step)]


def norm64(w: torch.Tensor) -> float:
    """‖w‖_F accumulated in float64 whatever w's dtype (NaN or Inf for non-finite entries, kept as they are).

    Chunked over rows: a float32 layer is never cast to float64 whole.
    """
    if w.dtype == torch.float64:
        return float(torch.linalg.vector_norm(w))
    sq = torch.zeros((), dtype=torch.float64, device=w.device)
    for sl in row_chunks(w):
        sq += torch.linalg.vector_norm(w[sl], dtype=torch.float64).square()
    return float(sq.sqrt())  # NaN and Inf pass through


#: entries per float32 partial sum of the fast (``compute_dtype=float32``) reductions; the partials are added
#: in float64, so each carries the rounding of one float32 sum of this length (about √n eps₃₂ of itself)
PARTIAL_ENTRIES = 1 << 16
#: the float32 fast path of :func:`residual_stats` derives ‖Δ‖ from the cosine only when ‖Δ‖ exceeds this
#: (its error is the cosine's divided by ‖Δ‖) and stays this far below 2 (cos = −1, where the scalar fit
#: √(1 − cos²) is ill-conditioned); other pairs get Δ formed explicitly in float64
FAST_RESID_MIN = 0.3


def _partial_dot(x: torch.Tensor, y: torch.Tensor) -> float:
    """⟨x, y⟩ of two float32 tensors: float32 dots of :data:`PARTIAL_ENTRIES` entries summed in float64."""
    fx, fy = x.reshape(-1), y.reshape(-1)
    parts = [torch.dot(fx[s : s + PARTIAL_ENTRIES], fy[s : s + PARTIAL_ENTRIES])
             for s in range(0, fx.numel(), PARTIAL_ENTRIES)]
    return float(torch.stack(parts).double().sum()) if parts else 0.0


def frob_norm(w: torch.Tensor, compute_dtype: torch.dtype | None = None) -> float:
    """‖w‖_F: :func:`norm64` by default; float32 partial sums added in float64 for a float32 ``w`` when
    ``compute_dtype`` is float32 (relative error about 1e-7, tested at 1e-6; 15x faster: no float64 cast)."""
    if compute_dtype == torch.float32 and w.dtype == torch.float32 and w.is_contiguous():
        return math.sqrt(_partial_dot(w, w))  # a sum of squares: ≥ 0, NaN and Inf pass through
    return norm64(w)


def _finite_norm(a: torch.Tensor) -> float:
    n = float(torch.linalg.vector_norm(a))
    return n if math.isfinite(n) and n > 0 else NAN


def frob_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frobenius cosine of two same-shape tensors; NaN if either is zero or non-finite."""
    na, nb = _finite_norm(a), _finite_norm(b)
    if math.isnan(na) or math.isnan(nb):
        return NAN
    return float((a * b).sum()) / (na * nb)


def cos_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Cosine matrix from a Gram matrix of flattened layers (or operators).

    Parameters
    ----------
    gram : (..., L, L)
        ``gram[..., i, j] = ⟨W_i, W_j⟩_F``; leading dimensions are a batch (e.g. heads).

    Returns
    -------
    (..., L, L) cosines; rows/columns of layers with zero or non-finite norm are NaN.
    """
    d = torch.diagonal(gram, dim1=-2, dim2=-1)
    ok = torch.isfinite(d) & (d > 0)
    norms = torch.where(ok, d.clamp_min(0).sqrt(), torch.full_like(d, NAN))
    cos = gram / (norms[..., :, None] * norms[..., None, :])
    # the diagonal is 1 by definition; division rounding must not make it 1 ± ulp
    torch.diagonal(cos, dim1=-2, dim2=-1).masked_fill_(ok, 1.0)
    return cos.clamp(-1.0, 1.0)


def residual_spectrum(delta: torch.Tensor, exact_max_dim: int = EXACT_SPECTRUM_MAX_DIM,
                      rank: int = RANDOMIZED_RANK, compute_dtype: torch.dtype | None = None,
                      finite: bool = False) -> tuple[float, float, str]:
    """Spectral entropy and effective rank of a residual matrix.

    Parameters
    ----------
    delta : (m, n)
    compute_dtype : torch dtype, optional
        Of the Gram and its eigenvalues (default: ``delta``'s dtype).  float32
        gives each σ² to about ``eps₃₂ σ_max²`` absolute; the entropy is then
        within 1e-5 nats of float64 (tested).
    finite : bool
        The caller has checked that ``delta`` is finite (skips the scan).

    Returns
    -------
    entropy : float
        Shannon entropy (nats) of ``p = σ² / Σσ²``.
    eff_rank : float
        ``exp(entropy)``: r for a matrix with r equal singular values.
    method : {"exact", "randomized"}
        ``"randomized"`` when ``min(m, n) > exact_max_dim``: the leading
        ``rank`` σ² come from randomized subspace iteration and the remaining
        energy ``‖Δ‖² − Σ top`` is spread evenly over the other directions,
        the maximum-entropy completion, so the entropy is an upper bound and
        exact whenever the tail is flat.
    """
    if not finite and not bool(torch.isfinite(delta).all()):
        return NAN, NAN, "exact"
    m, n = delta.shape
    if compute_dtype is not None:
        delta = delta.to(compute_dtype)
    if min(m, n) <= exact_max_dim:
        ent = float(spectral_entropy(gram_eigvals(delta).double()))
        return ent, math.exp(ent) if math.isfinite(ent) else NAN, "exact"
    top, tail = randomized_sq_singvals(delta, rank)
    top, tail = top.double(), tail.double()
    rest = min(m, n) - len(top)
    if rest > 0 and float(tail) > 0:
        spread = torch.full((rest,), float(tail) / rest, dtype=top.dtype, device=top.device)
        top = torch.cat([top, spread])
    ent = float(spectral_entropy(top))
    return ent, math.exp(ent) if math.isfinite(ent) else NAN, "randomized"


def residual_stats(a: torch.Tensor, b: torch.Tensor, spectrum: bool = True,
                   exact_max_dim: int = EXACT_SPECTRUM_MAX_DIM,
                   compute_dtype: torch.dtype | None = None,
                   norms: tuple[float, float] | None = None) -> dict[str, float | str]:
    """Adjacent-pair residual statistics of seed 003, with the residual spectrum really computed.

    Parameters
    ----------
    a, b : (m, n) or (n,)
        ``W_L`` and ``W_{L+1}``, any float dtype.  The cosine, the norms and
        ``Δ = b/‖b‖ − a/‖a‖`` are formed in float64 over row chunks of
        :data:`CHUNK_ENTRIES` entries, so no float64 copy of a layer is made.
    spectrum : bool
        Compute ``resid_eff_rank`` / ``resid_spec_entropy`` (matrices only).
    compute_dtype : torch dtype, optional
        Of the residual spectrum (:func:`residual_spectrum`; default float64):
        Δ is stored in it, each entry rounded once from float64.  float32
        without a spectrum, for float32 inputs: the cosine comes from float32
        partial dots added in float64 and ‖Δ‖ = √(2 − 2cos) when it exceeds
        :data:`FAST_RESID_MIN` and is not within it of 2 (else Δ is formed in float64 as above); tested
        within 1e-6 of float64.
    norms : (float, float), optional
        ``(‖a‖, ‖b‖)`` when the caller has them, exact to float64
        (:func:`norm64`; a float32 :func:`frob_norm` only on the fast path).

    Returns
    -------
    dict with ``cos``, ``resid_norm``, ``scalar_fit``, ``improve_frac``,
    ``resid_eff_rank``, ``resid_spec_entropy``, ``spectrum_method``.
    """
    out: dict[str, float | str] = dict(cos=NAN, resid_norm=NAN, scalar_fit=NAN, improve_frac=NAN,
                                       resid_eff_rank=NAN, resid_spec_entropy=NAN, spectrum_method="none")
    want = spectrum and b.ndim == 2
    fast = (compute_dtype == torch.float32 and not want and a.dtype == b.dtype == torch.float32
            and a.is_contiguous() and b.is_contiguous())
    if norms is None:
        norms = (frob_norm(a, torch.float32), frob_norm(b, torch.float32)) if fast else (norm64(a), norm64(b))
    na, nb = (v if math.isfinite(v) and v > 0 else NAN for v in norms)
    if math.isnan(na) or math.isnan(nb):  # a NaN or Inf entry makes its norm NaN
        return out
    if fast:
        # no spectrum: the cosine alone gives ‖Δ‖² = 2 − 2cos, accurate while ‖Δ‖ is not small
        cos = max(-1.0, min(1.0, _partial_dot(a, b) / (na * nb)))
        resid = math.sqrt(max(0.0, 2.0 - 2.0 * cos))
        if FAST_RESID_MIN < resid < 2.0 - FAST_RESID_MIN:  # away from cos = ±1, where √(1 − cos²) is ill-posed
            fit = resid * math.sqrt(max(0.0, 1.0 - resid * resid / 4))
            out.update(cos=cos, resid_norm=resid, scalar_fit=fit, improve_frac=(resid - fit) / resid)
            return out
        # Δ is formed below, from norms exact to float64 (a 1e-7 error in one would leave 1e-7 of b̂ in Δ)
        na, nb = norm64(a), norm64(b)
    delta = torch.empty(b.shape, dtype=compute_dtype or torch.float64, device=b.device) if want else None
    dot = torch.zeros((), dtype=torch.float64, device=b.device)
    sq = torch.zeros((), dtype=torch.float64, device=b.device)
    for sl in row_chunks(b):
        ac, bc = a[sl].to(torch.float64), b[sl].to(torch.float64, copy=True)
        dot += torch.vdot(ac.reshape(-1), bc.reshape(-1))
        bc.div_(nb).sub_(ac, alpha=1.0 / na)  # Δ's rows, in float64
        sq += bc.square().sum()
        if delta is not None:
            delta[sl] = bc
    cos = max(-1.0, min(1.0, float(dot) / (na * nb)))
    resid = math.sqrt(float(sq))
    # for unit â, b̂ with Δ = b̂ − â: ‖b̂ − cos·â‖² = ‖Δ‖²(1 − ‖Δ‖²/4) exactly, and it keeps full precision as
    # cos → 1, where 1 − cos² cancels catastrophically (a planted rescale must give 0, not 1e-8)
    fit = resid * math.sqrt(max(0.0, 1.0 - resid * resid / 4))
    out.update(cos=cos, resid_norm=resid, scalar_fit=fit)
    if resid <= ZERO_RESIDUAL * math.sqrt(b.numel()):
        # identical up to scale: the residual is rounding noise, its spectrum is undefined
        out["spectrum_method"] = "zero-residual"
        return out
    out["improve_frac"] = (resid - fit) / resid
    if delta is not None:
        ent, eff, method = residual_spectrum(delta, exact_max_dim, finite=True)
        out.update(resid_spec_entropy=ent, resid_eff_rank=eff, spectrum_method=method)
    return out


#: relative error of a float32 nuclear norm that :func:`nuclear_norm` accepts before falling back to an SVD
NUCLEAR_RTOL_32 = 1e-5


def nuclear_norm(core: torch.Tensor) -> float:
    """Nuclear norm ``Σσ`` of a (k, k) matrix, in its own dtype, returned as a float64 sum.

    Parameters
    ----------
    core : (k, k)
        float64: ``svdvals`` (the reference).  float32: the singular values
        are the square roots of the eigenvalues of ``coreᵀcore``, which costs
        about a third of an SVD.  Each eigenvalue then carries an absolute
        error of about ``δ = eps₃₂ λ_max`` (backward stability), so σ_i one of
        ``e_i = min(δ / 2σ_i, √δ)``.  The eigenvalues' rounding errors are
        independent, so the error of Σσ is estimated as ``‖e‖₂`` (the sum
        ``Σ e_i``, a worst case with every error at its bound and of one sign,
        sent half of the cores of real layers to the SVD while their measured
        errors were ≤ 1e-6); when ``‖e‖₂`` exceeds :data:`NUCLEAR_RTOL_32` of
        the result (a rank-deficient or badly conditioned core) the float32
        ``svdvals`` are used instead.  Tested against float64 at relative 1e-5
        (hypothesis: Gaussian, equal, rotated, low-rank, ill-conditioned) and
        measured ≤ 1e-6 on random and real layers.
    """
    if not bool(torch.isfinite(core).all()):  # LAPACK raises on NaN; a (k, k) scan is cheap
        return NAN
    if core.dtype == torch.float64:
        return float(torch.linalg.svdvals(core).sum())
    ev = torch.linalg.eigvalsh(core.T @ core).double()
    hi = float(ev[-1])
    if not math.isfinite(hi):
        return NAN
    if hi <= 0:
        return 0.0
    sig = ev.clamp_min(0).sqrt()
    nuc = float(sig.sum())
    delta = torch.finfo(torch.float32).eps * hi
    per = torch.minimum(delta / (2 * sig.clamp_min(1e-300)), torch.full_like(sig, math.sqrt(delta)))
    err = float(per.norm())  # the rounding errors of different eigenvalues are independent: they add in quadrature
    if err > NUCLEAR_RTOL_32 * nuc:
        return float(torch.linalg.svdvals(core).double().sum())
    return nuc


def cross_core(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A (k, k) matrix with the singular values of ``aᵀ b``, k = min(m, n), in ``a``'s dtype.

    Parameters
    ----------
    a, b : (m, n)
        Contracted over ``m``.

    Notes
    -----
    When ``m < n`` the (n, n) product has rank ≤ m: with thin QRs
    ``aᵀ = Q_a R_a`` and ``bᵀ = Q_b R_b``, ``aᵀb = Q_a (R_a R_bᵀ) Q_bᵀ`` has the
    singular values of the (m, m) core ``R_a R_bᵀ``.  Cost O(n m²) instead of O(m n²).
    """
    m, n = a.shape
    if m < n:
        _, ra = torch.linalg.qr(a.T)
        _, rb = torch.linalg.qr(b.T)
        return ra @ rb.T
    return a.T @ b


def nuclear_cross(a: torch.Tensor, b: torch.Tensor, compute_dtype: torch.dtype | None = None) -> float:
    """Nuclear norm ‖aᵀ b‖_* of the cross product over the first axis, without forming it when larger.

    Parameters
    ----------
    a, b : (m, n)
        Contracted over ``m``; the result is the nuclear norm of an (n, n) matrix.
    compute_dtype : torch dtype, optional
        Dtype of the products and the factorization (default: ``a``'s);
        float32 holds a relative 1e-4 of the float64 value (:func:`nuclear_norm`).
    """
    dt = compute_dtype or a.dtype
    return nuclear_norm(cross_core(a.to(dt), b.to(dt)))


def aligned_cos(a: torch.Tensor, b: torch.Tensor, residual_axis: int, compute_dtype: torch.dtype | None = None,
                norms: tuple[float, float] | None = None) -> float:
    """Best cosine after an orthogonal rotation of the residual-stream basis.

    Parameters
    ----------
    a, b : (n_out, n_in)
        Two layers' matrices of one family.
    residual_axis : {0, 1}
        The axis that lives in the residual stream: 1 (inputs) for q, k, v,
        gate, up; 0 (outputs) for o, down.  The rotation acts on that axis;
        the other axis is contracted.
    compute_dtype : torch dtype, optional
        Of the cross product and its factorization (default: ``a``'s dtype);
        float32 is within a relative 1e-4 of float64 (:func:`nuclear_norm`).
    norms : (float, float), optional
        ``(‖a‖, ‖b‖)`` when the caller has them (null draws reuse them).

    Returns
    -------
    float in [0, 1] (NaN for degenerate input).  ``aligned_cos(a, a) = 1``, and
    ``aligned_cos(a, a @ R) = 1`` for any orthogonal R on the residual side.
    """
    # a NaN or Inf entry makes the norm NaN or Inf, which _finite_norm turns into NaN: no separate scan needed
    na, nb = norms if norms is not None else (_finite_norm(a), _finite_norm(b))
    if not (math.isfinite(na) and math.isfinite(nb) and na > 0 and nb > 0):
        return NAN
    if residual_axis == 1:
        nuc = nuclear_cross(a, b, compute_dtype)  # contract outputs: ‖aᵀb‖_*, aᵀb acts on inputs
    elif residual_axis == 0:
        nuc = nuclear_cross(a.T, b.T, compute_dtype)  # contract inputs: ‖a bᵀ‖_*
    else:
        raise ValueError(f"residual_axis must be 0 or 1, got {residual_axis!r}")
    return min(1.0, nuc / (na * nb))
