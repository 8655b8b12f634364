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


def norm64(w: torch.Tensor) -> float:
    """‖w‖_F accumulated in float64 whatever w's dtype (NaN or Inf for non-finite entries, kept as they are)."""
    return float(torch.linalg.vector_norm(w, dtype=torch.float64))


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
                   compute_dtype: torch.dtype | None = None) -> dict[str, float | str]:
    """Adjacent-pair residual statistics of seed 003, with the residual spectrum really computed.

    Parameters
    ----------
    a, b : (m, n) or (n,)
        ``W_L`` and ``W_{L+1}``.
    spectrum : bool
        Compute ``resid_eff_rank`` / ``resid_spec_entropy`` (matrices only).
    compute_dtype : torch dtype, optional
        Of the residual spectrum only (:func:`residual_spectrum`); the cosine
        and the norms are computed in the inputs' dtype.

    Returns
    -------
    dict with ``cos``, ``resid_norm``, ``scalar_fit``, ``improve_frac``,
    ``resid_eff_rank``, ``resid_spec_entropy``, ``spectrum_method``.
    """
    na, nb = _finite_norm(a), _finite_norm(b)
    out: dict[str, float | str] = dict(cos=NAN, resid_norm=NAN, scalar_fit=NAN, improve_frac=NAN,
                                       resid_eff_rank=NAN, resid_spec_entropy=NAN, spectrum_method="none")
    if math.isnan(na) or math.isnan(nb):  # a NaN or Inf entry makes its norm NaN
        return out
    cos = max(-1.0, min(1.0, float(torch.vdot(a.reshape(-1), b.reshape(-1))) / (na * nb)))
    delta = b / nb
    delta.sub_(a, alpha=1.0 / na)  # one temporary of the layer's size
    resid = float(torch.linalg.vector_norm(delta))
    # for unit â, b̂ with Δ = b̂ − â: ‖b̂ − cos·â‖² = ‖Δ‖²(1 − ‖Δ‖²/4) exactly, and it keeps full precision as
    # cos → 1, where 1 − cos² cancels catastrophically (a planted rescale must give 0, not 1e-8)
    fit = resid * math.sqrt(max(0.0, 1.0 - resid * resid / 4))
    out.update(cos=cos, resid_norm=resid, scalar_fit=fit)
    if resid <= ZERO_RESIDUAL * math.sqrt(delta.numel()):
        # identical up to scale: the residual is rounding noise, its spectrum is undefined
        out["spectrum_method"] = "zero-residual"
        return out
    out["improve_frac"] = (resid - fit) / resid
    if spectrum and delta.ndim == 2:
        ent, eff, method = residual_spectrum(delta, exact_max_dim, compute_dtype=compute_dtype, finite=True)
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
        ``min(δ / 2σ_i, √δ)``; when the sum of those bounds exceeds
        :data:`NUCLEAR_RTOL_32` of the result (a rank-deficient or badly
        conditioned core) the float32 ``svdvals`` are used instead.  Tested
        against float64 at relative 1e-4 (measured: ≤ 2e-6 on random and
        real layers).
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
    err = float(torch.minimum(delta / (2 * sig.clamp_min(1e-300)), torch.full_like(sig, math.sqrt(delta))).sum())
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
