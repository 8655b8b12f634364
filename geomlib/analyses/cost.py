"""How long a run will take, from the checkpoint's shapes alone: printed before long runs.

:func:`estimate` counts the dominant kernels of each analysis (matrix products,
symmetric eigensolvers, SVDs, QRs, ``linear_sum_assignment``, checkpoint reads)
from ``n_layers``, ``hidden``, ``n_heads``, ``n_kv_heads``, ``head_dim``,
``intermediate`` and the analysis' parameters, and turns them into seconds with
speeds measured once per process, device and thread count by timing tiny
kernels (:func:`calibrate`, well under 100 ms on a CPU).  Nothing is read
from the checkpoint.

The counting lives in one small function per analysis (:func:`_weights_cost`,
:func:`_heads_cost`, :func:`_gauge_cost`, :func:`_spectra_cost`, registered in :data:`COUNTERS`) that
mirrors the loops of its ``compute.py`` and reads the parameters by name with
defaults, so a change of kernel (float32 factorizations, fewer null draws, a
new choice of pairs) is a change of a few lines here.  An analysis without a
counter costs nothing in the estimate.

It is an estimate: within a factor of about two of the wall time on the
machines it was checked on (1-2 CPU threads), dominated by what grows fastest
(all-pairs matching, null draws).  Torch-free at import.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from ..arch.families import RESIDUAL_AXIS

if TYPE_CHECKING:  # pragma: no cover
    from ..model.checkpoint import Checkpoint

#: a run estimated above this many seconds gets its one line on stderr
THRESHOLD_S = 30.0

F32, F64 = "float32", "float64"
#: checkpoint elements read, checked and converted per second (storage to float32/64 on the device's host);
#: not measured: it depends on the disk and the page cache
READ_ELEMS_PER_S = 3e8
#: float64 elements per second of one memory-bound elementwise pass (norms, isfinite, scaling, copies)
ELEMENTWISE_PER_S = 5e8
#: Python and dispatch overhead of one kernel call
CALL_S = 3e-5
#: per analysis: building the Dataset, provenance, writing the netCDF file
FIXED_S = 0.3
#: transformers import, tokenizer and model construction of the attention-entropy forward pass
FORWARD_FIXED_S = 2.5
#: fraction of float32 nuclear norms that fall back from the Gram's eigvalsh to svdvals (rank-deficient or badly
#: conditioned cores, see geomlib.metrics.similarity.nuclear_norm; rare on real layers)
F32_SVD_FALLBACK = 0.1
#: tokens of the built-in text (``geomlib/data/alice.txt``) with a typical tokenizer
BUILTIN_TEXT_TOKENS = 480
#: seconds per n^2.5 of ``linear_sum_assignment`` on a dense n x n Gaussian cost when it cannot be measured
LSA_S_PER_N25 = 1.2e-9


# ------------------------------------------------------------------------------------------ rates
@dataclass(frozen=True)
class Rates:
    """Kernel speeds on one device at one thread count (flop/s per dtype name unless stated).

    Flop counts: matmul ``2mnk``; ``eig`` symmetric eigenvalues ``4n³`` (``eigh`` with
    vectors is counted ``9n³`` at the same rate); ``svd`` singular values of an
    m x n matrix (m >= n) ``4mn² - 4n³/3``; ``qr`` Householder ``2mn² - 2n³/3``.
    """

    device: str
    threads: int
    matmul: Mapping[str, float]
    eig: Mapping[str, float]
    svd: Mapping[str, float]
    qr: Mapping[str, float]
    #: seconds per n^2.5 of scipy's ``linear_sum_assignment`` (CPU, single-threaded); None: measured on
    #: first use (:func:`lsa_rate`), so runs without a matching do not import scipy for their estimate
    lsa: float | None = None
    read: float = READ_ELEMS_PER_S
    elementwise: float = ELEMENTWISE_PER_S


#: measured rates by (device, threads): calibrated once per process
_RATES: dict[tuple[str, int], Rates] = {}
#: measured seconds per n^2.5 of linear_sum_assignment (CPU, one thread whatever the count)
_LSA: list[float] = []


def _best_time(fn: Callable[[], Any], sync: Callable[[], None], reps: int = 2) -> float:
    fn()  # warm-up: lazy library initialisation, workspace allocation
    sync()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-7)


def lsa_rate() -> float:
    """Seconds per n^2.5 of ``linear_sum_assignment``, from one 256² Gaussian cost (measured once, ~5 ms)."""
    if not _LSA:
        try:
            import numpy as np
            from scipy.optimize import linear_sum_assignment
        except ImportError:  # pragma: no cover - scipy comes with the compute extra
            _LSA.append(LSA_S_PER_N25)
        else:
            n = 256
            cost = np.random.default_rng(0).standard_normal((n, n))
            _LSA.append(_best_time(lambda: linear_sum_assignment(cost), lambda: None) / n**2.5)
    return _LSA[0]


def calibrate(device: Any = "cpu") -> Rates:
    """Time tiny kernels on ``device`` at torch's current thread count (about 50 ms on one CPU thread).

    A 384² matmul, a 256² ``eigvalsh``, a 192² ``svdvals`` and a 512 x 128 QR in
    float32 and float64 (larger on CUDA, where tiny kernels time the launch);
    best of two after a warm-up.  ``linear_sum_assignment`` is timed on first
    use instead (:func:`lsa_rate`).
    """
    import torch

    from ..device import resolve_device

    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    n_mm, n_eig, n_svd, qr_shape = (2048, 512, 512, (4096, 256)) if cuda else (384, 256, 192, (512, 128))
    gen = torch.Generator().manual_seed(0)
    out: dict[str, dict[str, float]] = {"matmul": {}, "eig": {}, "svd": {}, "qr": {}}
    with torch.no_grad():
        for dt in (torch.float32, torch.float64):
            name = str(dt).split(".")[-1]

            def rnd(*shape, dt=dt):
                return torch.randn(*shape, generator=gen, dtype=dt).to(dev)

            a, b = rnd(n_mm, n_mm), rnd(n_mm, n_mm)
            out["matmul"][name] = 2 * n_mm**3 / _best_time(lambda a=a, b=b: a @ b, sync)
            s = rnd(n_eig, n_eig)
            s = s @ s.T
            out["eig"][name] = 4 * n_eig**3 / _best_time(lambda s=s: torch.linalg.eigvalsh(s), sync)
            m = rnd(n_svd, n_svd)
            out["svd"][name] = _svd_flops(n_svd, n_svd) / _best_time(lambda m=m: torch.linalg.svdvals(m), sync)
            t = rnd(*qr_shape)
            out["qr"][name] = _qr_flops(*qr_shape) / _best_time(lambda t=t: torch.linalg.qr(t), sync)
    return Rates(str(dev), int(torch.get_num_threads()), out["matmul"], out["eig"], out["svd"], out["qr"])


def rates(device: Any = "cpu", threads: int | None = None) -> Rates:
    """The speeds on ``device`` with ``threads`` torch threads (default: the current count), measured once."""
    import torch

    from ..device import resolve_device
    from ..threads import using_threads

    dev = resolve_device(device)
    n = int(threads or torch.get_num_threads())
    key = (str(dev), n)
    if key not in _RATES:
        with using_threads(n):
            _RATES[key] = calibrate(dev)
    return _RATES[key]


# ---------------------------------------------------------------------------------------- kernels
def _svd_flops(m: int, n: int) -> float:
    a, b = max(m, n), min(m, n)
    return 4.0 * a * b * b - 4.0 * b**3 / 3


def _qr_flops(m: int, n: int) -> float:
    a, b = max(m, n), min(m, n)
    return 2.0 * a * b * b - 2.0 * b**3 / 3


class Kernels:
    """Seconds of one call of each kernel at the measured :class:`Rates` (``dtype``: ``"float32"``/``"float64"``)."""

    def __init__(self, r: Rates) -> None:
        self.r = r

    def matmul(self, m: int, n: int, k: int, dtype: str = F64) -> float:
        """``(m, k) @ (k, n)``."""
        return CALL_S + 2.0 * m * n * k / self.r.matmul[dtype]

    def eigvalsh(self, n: int, dtype: str = F64) -> float:
        return CALL_S + 4.0 * n**3 / self.r.eig[dtype]

    def eigh(self, n: int, dtype: str = F64) -> float:
        return CALL_S + 9.0 * n**3 / self.r.eig[dtype]

    def svdvals(self, m: int, n: int, dtype: str = F64) -> float:
        return CALL_S + _svd_flops(m, n) / self.r.svd[dtype]

    def qr(self, m: int, n: int, dtype: str = F64) -> float:
        return CALL_S + _qr_flops(m, n) / self.r.qr[dtype]

    def lsa(self, n: int) -> float:
        """``linear_sum_assignment`` of a dense n x n cost (n³ worst case; n^2.5 measured on Gaussian costs)."""
        per = self.r.lsa if self.r.lsa is not None else lsa_rate()
        return CALL_S + per * float(n) ** 2.5

    def read(self, elems: float) -> float:
        """Reading ``elems`` checkpoint elements and converting them."""
        return elems / self.r.read

    def passes(self, elems: float, k: float = 1.0) -> float:
        """``k`` memory-bound elementwise passes over ``elems`` float64 elements."""
        return k * elems / self.r.elementwise

    # composite kernels of geomlib.metrics ---------------------------------------------------------
    def nuclear_norm(self, k: int, dtype: str = F64) -> float:
        """Σσ of a k x k core: float64 ``svdvals``; float32 ``eigvalsh`` of its Gram, ``svdvals`` when ill-conditioned."""
        if dtype == F64:
            return self.svdvals(k, k, dtype)
        return self.matmul(k, k, k, dtype) + self.eigvalsh(k, dtype) + F32_SVD_FALLBACK * self.svdvals(k, k, dtype)

    def aligned_cos(self, shape: tuple[int, int], residual_axis: int, dtype: str = F64) -> float:
        """:func:`geomlib.metrics.similarity.aligned_cos`: nuclear norm of the cross product, QR route when thin."""
        m, n = shape if residual_axis == 1 else shape[::-1]  # contracted over m, the result is n x n
        if m < n:
            t = 2 * self.qr(n, m, dtype) + self.matmul(m, m, m, dtype) + self.nuclear_norm(m, dtype)
        else:
            t = self.matmul(n, n, m, dtype) + self.nuclear_norm(n, dtype)
        return t + self.passes(m * n, 2)

    def residual_spectrum(self, shape: tuple[int, int], exact_max_dim: int, dtype: str = F64) -> float:
        """:func:`geomlib.metrics.similarity.residual_spectrum`: Gram + eigvalsh, or randomized iteration."""
        m, n = shape
        s, big = min(m, n), max(m, n)
        if s <= exact_max_dim:
            return self.matmul(s, s, big, dtype) + self.eigvalsh(s, dtype) + self.passes(m * n, 6)
        k = min(512 + 10, m, n)
        return (9 * self.matmul(m, k, n, dtype) + 9 * self.qr(big, k, dtype) + self.matmul(k, n, m, dtype)
                + self.svdvals(k, n, dtype) + self.passes(m * n, 6))


# ------------------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class Step:
    """One counted part of a run: ``count`` repetitions of something, ``seconds`` in all."""

    analysis: str
    what: str
    count: int
    unit: str
    seconds: float

    def describe(self) -> str:
        """E.g. ``gauge MLP matching, 27 pairs``."""
        return f"{self.analysis} {self.what}, {self.count} {self.unit}{'' if self.count == 1 else 's'}"


@dataclass(frozen=True)
class Estimate:
    """What :func:`estimate` returns.

    Attributes
    ----------
    seconds : float
        The whole run.
    per_analysis : dict
        Analysis name -> seconds, in run order.
    dominant : str
        The largest step, e.g. ``"gauge MLP matching, 27 pairs"`` (empty when nothing was counted).
    steps : tuple of Step
        Everything counted.
    device : str
    threads : int
    """

    seconds: float
    per_analysis: dict[str, float]
    dominant: str
    steps: tuple[Step, ...] = field(default=())
    device: str = "cpu"
    threads: int = 1

    def message(self) -> str:
        """The stderr line: ``geomlib: estimated 4 min for weights+heads+gauge on 2 CPU threads (largest step: ...)``."""
        where = (f"{self.threads} CPU thread{'' if self.threads == 1 else 's'}" if self.device.startswith("cpu")
                 else self.device)
        largest = f" (largest step: {self.dominant})" if self.dominant else ""
        return (f"geomlib: estimated {format_seconds(self.seconds)} for {'+'.join(self.per_analysis)} on "
                f"{where}{largest}")


def format_seconds(s: float) -> str:
    """``45 s``, ``4 min``, ``2.5 h``."""
    if s < 90:
        return f"{max(1, round(s))} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    return f"{s / 3600:.1f} h"


# ----------------------------------------------------------------------------------------- shapes
def _shape_facts(ckpt) -> tuple[int, int, int, int, int, int]:
    """``(n_layers, hidden, n_heads, n_kv_heads, head_dim, intermediate)`` (0 for what the model lacks)."""
    return tuple(int(getattr(ckpt, a, 0) or 0) for a in
                 ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "intermediate"))  # type: ignore[return-value]


def matrix_shapes(ckpt) -> dict[str, tuple[int, int]]:
    """HF ``[out, in]`` shape of each matrix family the checkpoint has (from its facts, nothing read)."""
    _, h, H, KV, d, inter = _shape_facts(ckpt)
    q, kv = H * d, KV * d
    table = {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
             "gate_proj": (inter, h), "up_proj": (inter, h), "down_proj": (h, inter)}
    return {f: table[f] for f in getattr(ckpt, "families", ()) if f in table}


def _params(params: Any) -> dict:
    """A :class:`~geomlib.analyses.params.Params`, a dict or None as a plain dict."""
    if params is None:
        return {}
    if hasattr(params, "as_dict"):
        return params.as_dict()
    return dict(params)


def _chunk(budget_mib: int, bytes_per_layer: float, n: int) -> int:
    """As :func:`geomlib.analyses.streaming.layers_within`."""
    return max(1, min(n, int(budget_mib * 2**20 // max(1, bytes_per_layer)))) if n else 1


def _streamed_loads(n: int, chunk: int) -> float:
    """Layer reads of :func:`geomlib.analyses.streaming.pairs`: each held chunk, then every later layer once."""
    return float(sum(min(chunk, n - c0) + max(0, n - c0 - chunk) for c0 in range(0, n, chunk)))


def _n_pairs(n: int, diagonal: bool) -> int:
    return n * (n + 1) // 2 if diagonal else n * (n - 1) // 2


def _slow_reads(ckpt) -> float:
    """Quantized (GGUF) storage is dequantized on read: slower per element."""
    return 3.0 if getattr(ckpt, "quantization", None) else 1.0


# ------------------------------------------------------------------------------- per-analysis counts
def _weights_cost(ckpt, params: dict, k: Kernels) -> list[Step]:
    """:mod:`geomlib.analyses.weights.compute`: the per-layer pass, the Gram pass, optionally all aligned pairs."""
    n = _shape_facts(ckpt)[0]
    adj = max(n - 1, 0)
    draws = int(params.get("null_draws", 8) or 0)
    # per adjacent pair: the permutation null, and the scrambled one (always before it became optional)
    per_pair_nulls = 1 + bool(params.get("scrambled_null", True))
    aligned = params.get("aligned_pairs", "adjacent")
    exact = int(params.get("exact_spectrum_max_dim", 8192))
    block_mib = int(params.get("block_mib", 256))
    dt = params.get("precision", F64)  # of the cross products and factorizations
    shapes = matrix_shapes(ckpt)
    numel = sum(a * b for a, b in shapes.values())
    slow = _slow_reads(ckpt)
    gram = params.get("cos_pairs", "all") == "all"
    steps = [
        # pass 1 reads each layer once; the Gram pass (cos_pairs="all") reads it again in float64 blocks
        Step("weights", "reading layers", n, "layer", (1 + gram) * n * k.read(numel) * slow + k.passes(n * numel, 4)),
    ]
    if gram:
        steps.append(Step("weights", "all-pairs Gram", n, "layer",
                          sum(k.matmul(n, n, a * b) for a, b in shapes.values())))
    if params.get("residual_spectrum", True):
        steps.append(Step("weights", "residual spectra", adj, "pair",
                          adj * sum(k.residual_spectrum(s, exact, dt) for s in shapes.values())))
    if aligned != "none":
        one = sum(k.aligned_cos(s, RESIDUAL_AXIS[f], dt) for f, s in shapes.items())
        steps.append(Step("weights", "adjacent aligned cos-sim", adj, "pair", adj * one))
        if draws and adj:
            # permutation (and scrambled) draws per pair; the Gaussian null once per family shape
            t = (adj * per_pair_nulls * draws * one + draws * one
                 + k.passes((adj * per_pair_nulls + 1) * draws * numel, 3))
            steps.append(Step("weights", f"aligned cos-sim nulls ({draws} draws)", adj, "pair", t))
    if aligned == "all":
        pairs = _n_pairs(n, diagonal=False)
        t = 0.0
        for f, (a, b) in shapes.items():
            loads = _streamed_loads(n, _chunk(block_mib, a * b * 4, n))
            t += pairs * k.aligned_cos((a, b), RESIDUAL_AXIS[f], dt) + loads * k.read(a * b) * slow
        steps.append(Step("weights", "all-pairs aligned cos-sim", pairs, "pair", t))
    return steps


def _heads_cost(ckpt, params: dict, k: Kernels) -> list[Step]:
    """:mod:`geomlib.analyses.heads.compute`: per-head spectra, the all-pairs operator gram, angles, forward pass."""
    from .heads import OPERATORS, operators_of

    n, h, H, _, d, _ = _shape_facts(ckpt)
    kinds = operators_of(getattr(ckpt, "families", ()))
    if not kinds or not H or not d:
        return []
    kk = min(int(params.get("k", 8)), 2 * d)
    draws = int(params.get("null_draws", 32) or 0)
    block_mib = int(params.get("block_mib", 256))
    dt = params.get("precision", F64)  # of the all-pairs operator gram; the spectra stay float64
    shapes = matrix_shapes(ckpt)
    fams = {f for kind in kinds for f in OPERATORS[kind]}
    numel = sum(a * b for f, (a, b) in shapes.items() if f in fams)
    slow = _slow_reads(ckpt)
    r = min(h, 2 * d)

    def spectrum(heads: int) -> float:  # operator_spectrum of one operator for ``heads`` heads
        per = (k.qr(h, 2 * d) + k.matmul(r, r, d) + k.svdvals(r, r) + k.eigh(r) + k.matmul(h, kk, r)
               + k.passes(h * 2 * d, 4))
        return heads * per

    steps = [Step("heads", "per-head spectra", n, "layer", n * (k.read(numel) * slow + len(kinds) * spectrum(H)))]
    pairs = _n_pairs(n, diagonal=True)
    loads = _streamed_loads(n, _chunk(block_mib, 2 * numel * (4 if dt == F32 else 8), n))
    gram = pairs * len(kinds) * H * 2 * k.matmul(d, d, h, dt) + loads * k.read(numel) * slow
    steps.append(Step("heads", "operator gram", pairs, "pair", gram))
    # principal cosines (k x hidden products and k x k SVDs for every layer pair and head) and top-1 overlaps
    angles = len(kinds) * n * n * H * (k.matmul(kk, kk, h) + k.svdvals(kk, kk) + k.passes(h, 2))
    steps.append(Step("heads", "principal angles", n * n, "pair", angles))
    if draws:
        steps.append(Step("heads", f"random-head nulls ({draws} draws)", len(kinds), "operator",
                          len(kinds) * 2 * spectrum(draws)))
    if params.get("forward_pass", True):
        tokens = int(params.get("max_tokens", 512))
        if not params.get("text"):
            tokens = min(tokens, BUILTIN_TEXT_TOKENS)
        layer_params = sum(a * b for a, b in shapes.values())
        vocab = int((getattr(ckpt, "config", None) or {}).get("vocab_size", 0) or 0)
        fwd = (FORWARD_FIXED_S + k.read(n * layer_params + vocab * h) * slow
               + n * (k.matmul(tokens, layer_params // max(h, 1), h, F32)  # the projections, token-parallel
                      + 2 * H * k.matmul(tokens, tokens, d, F32)  # scores and the weighted values
                      + k.passes(H * tokens * tokens, 8)))  # softmax, then row entropies in float64
        steps.append(Step("heads", "attention-entropy forward pass", tokens, "token", fwd))
    return steps


def _gauge_pairs(ckpt, choice: str) -> str:
    """``pairs="auto"`` resolved as :func:`geomlib.analyses.gauge.compute.resolve_pairs` does."""
    if choice != "auto":
        return choice
    n, h, _, _, _, inter = _shape_facts(ckpt)
    try:
        from .gauge.compute import AUTO_ALL_PAIRS_WORK as limit
    except ImportError:  # pragma: no cover - renamed: fall back to the value it had
        limit = 1e12
    work = _n_pairs(n, diagonal=False) * float(inter) ** 2 * h if "up_proj" in getattr(ckpt, "families", ()) else 0.0
    return "all" if work <= limit else "adjacent"


def _gauge_cost(ckpt, params: dict, k: Kernels) -> list[Step]:
    """:mod:`geomlib.analyses.gauge.compute`: neuron and head matching, composition, rotation nulls."""
    from .heads import operators_of

    n, h, H, KV, d, inter = _shape_facts(ckpt)
    fams = tuple(getattr(ckpt, "families", ()))
    which = _gauge_pairs(ckpt, params.get("pairs", "auto"))
    draws = int(params.get("null_draws", 4) or 0)
    block_mib = int(params.get("block_mib", 256))
    dt = params.get("precision", F64)  # of the neuron and head similarities and the null rotations
    pairs = _n_pairs(n, diagonal=False) if which == "all" else max(n - 1, 0)
    adj = max(n - 1, 0)
    shapes = matrix_shapes(ckpt)
    has_mlp = "up_proj" in fams and "down_proj" in fams
    ops = operators_of(fams) if H and d and KV else []
    compose = all(f in fams for f in ("q_proj", "k_proj", "v_proj", "o_proj")) and bool(ops)
    g = H // KV if KV else 1

    def mlp_match() -> float:  # match_neurons: (gate) + up·down factor products, the assignment, the cosines
        products = 2 + ("gate_proj" in fams)
        return (products * k.matmul(inter, inter, h, dt) + k.passes(inter * inter, 2 + products) + k.lsa(inter)
                + k.passes(inter * h, 4 * products))

    def head_match() -> float:  # match_heads: head_cos per operator, then the (group) assignments
        per_op = KV * k.matmul(d, KV * d, h, dt) + H * k.matmul(d, H * d, h, dt) + k.passes(H * H * d * d, 3)
        assign = k.lsa(H) if g == 1 else KV * KV * k.lsa(g) + k.lsa(KV)
        return len(ops) * per_op + assign

    def composition() -> float:  # factored_composition for q (every key head), k and v (kv heads only)
        t = 0.0
        for unique in (H, KV, KV):
            t += H * unique * k.matmul(d, d, h, dt) + 2 * H * H * k.matmul(d, d, d, dt)
        return t

    def rotation() -> float:  # per null: random_orthogonal, rotate_residual of layer b's families it compares
        nulls = int(has_mlp and inter > 0) + int(bool(ops))
        return (nulls * (k.qr(h, h) + k.passes(h * h, 2))
                + sum(k.matmul(a if RESIDUAL_AXIS[f] == 1 else b, h, h, dt) for f, (a, b) in shapes.items()))

    steps: list[Step] = []
    numel = sum(a * b for a, b in shapes.values())
    if which == "all":
        loads = _streamed_loads(n, _chunk(block_mib, numel * 8, n))
    else:
        loads = float(n)
    steps.append(Step("gauge", "reading layers", int(loads), "layer read",
                      loads * (k.read(numel) * _slow_reads(ckpt) + k.passes(numel, 3))))
    if has_mlp and inter:
        steps.append(Step("gauge", "MLP matching", pairs, "pair", pairs * mlp_match()))
    if ops:
        steps.append(Step("gauge", "head matching", pairs, "pair", pairs * head_match()))
    if compose:
        steps.append(Step("gauge", "composition scores", pairs, "pair", pairs * composition()))
    if draws and adj and (has_mlp or ops):
        per = rotation() + (mlp_match() if has_mlp and inter else 0.0) + (head_match() if ops else 0.0)
        steps.append(Step("gauge", f"rotation nulls ({draws} draws)", adj, "pair", adj * draws * per))
    return steps


def _spectra_cost(ckpt, params: dict, k: Kernels) -> list[Step]:
    """:mod:`geomlib.analyses.spectra.compute`: one SVD per matrix and layer, its power-law fit, the Gaussian nulls."""
    n = _shape_facts(ckpt)[0]
    dt = params.get("precision", F64)
    draws = int(params.get("null_draws", 8) or 0)
    shapes = matrix_shapes(ckpt)
    numel = sum(a * b for a, b in shapes.values())
    one = sum(k.svdvals(a, b, dt) for a, b in shapes.values())
    # the KS search of the fit: about 12 float64 passes over (candidates x eigenvalues) per matrix
    fit = sum(k.passes(12.0 * min(a, b) ** 2) for a, b in shapes.values())
    steps = [Step("spectra", "per-layer SVDs", n, "layer",
                  n * (k.read(numel) * _slow_reads(ckpt) + k.passes(numel, 2) + one + fit))]
    if draws:
        steps.append(Step("spectra", f"Gaussian nulls ({draws} draws)", len(shapes), "family",
                          draws * (one + fit + k.passes(numel, 2))))
    return steps


#: analysis name -> its counter ``(ckpt, params dict, Kernels) -> list of Step``; add one for a new analysis
COUNTERS: dict[str, Callable[[Any, dict, Kernels], list[Step]]] = {
    "weights": _weights_cost,
    "heads": _heads_cost,
    "gauge": _gauge_cost,
    "spectra": _spectra_cost,
}


def estimate(ckpt: Checkpoint, analyses: Mapping[str, Any], device: Any = "cpu", threads: int | None = None,
             *, speeds: Rates | None = None) -> Estimate:
    """Seconds a run of ``analyses`` on ``ckpt`` will take, from shapes and calibrated kernel speeds.

    Parameters
    ----------
    ckpt : Checkpoint
        Or anything with its shape attributes (``n_layers``, ``hidden``, ``n_heads``,
        ``n_kv_heads``, ``head_dim``, ``intermediate``, ``families``; optionally
        ``quantization`` and ``config``).  Nothing is read.
    analyses : mapping
        Analysis name -> its :class:`~geomlib.analyses.params.Params` (or a dict of
        the parameters given; missing ones take the analysis' defaults as the
        counters know them).  Names without a counter in :data:`COUNTERS` count 0.
    device, threads :
        Where and with how many torch threads it will run; the speeds are
        measured there once per process (:func:`rates`).
    speeds : Rates, optional
        Use these instead of measuring (tests, what-if estimates).

    Returns
    -------
    Estimate
    """
    sp = speeds if speeds is not None else rates(device, threads)
    k = Kernels(sp)
    steps: list[Step] = []
    per: dict[str, float] = {}
    for name, params in analyses.items():
        counter = COUNTERS.get(name)
        found = counter(ckpt, _params(params), k) if counter is not None else []
        steps += found
        per[name] = FIXED_S + sum(s.seconds for s in found)
    big = max(steps, key=lambda s: s.seconds, default=None)
    return Estimate(sum(per.values()), per, big.describe() if big is not None else "", tuple(steps),
                    sp.device, sp.threads)


def announce(est: Estimate, stream: TextIO | None = None) -> bool:
    """Print :meth:`Estimate.message` when the run is estimated above :data:`THRESHOLD_S`; whether it did."""
    if not (est.seconds > THRESHOLD_S and math.isfinite(est.seconds)):
        return False
    print(est.message(), file=stream if stream is not None else sys.stderr, flush=True)
    return True


__all__ = ["COUNTERS", "THRESHOLD_S", "Estimate", "Kernels", "Rates", "Step", "announce", "calibrate", "estimate",
           "format_seconds", "lsa_rate", "matrix_shapes", "rates"]
