"""The analysis protocol and the run context every analysis receives.

An analysis is one object (a subclass of :class:`Analysis`) registered once in
:mod:`geomlib.analyses.registry`.  Everything that lists analyses (the CLI
flags, :func:`geomlib.compute`'s keywords, the cache key, the dashboard's model
labels, the report) iterates the registry, so adding one touches one module.

Torch-free at import: the cache and the dashboard read the declarations; only
:meth:`Analysis.run` imports the compute code (and torch).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

from ..errors import GeomlibWarning, InvalidArgumentError
from .params import Param, Params

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from ..model.checkpoint import Checkpoint


@dataclass
class RunContext:
    """What every analysis run shares: the device (resolved once), progress bars, recorded warnings.

    Make one with :meth:`create`; :func:`geomlib.compute` makes one per call and
    hands each analysis :meth:`for_analysis`, a copy with its own warning list
    (the warnings end up in that analysis' provenance).

    Attributes
    ----------
    device : torch.device
        Where tensors are computed.
    progress : bool
        Whether to show progress bars.
    warnings : list of str
        Warnings recorded during this analysis' run.
    skipped : dict of str to str
        Optional parts not computed, with the reason (stored in provenance as ``not_computed``).
    """

    device: Any
    progress: bool = True
    warnings: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, device: Any = "auto", progress: bool = True) -> "RunContext":
        """Resolve ``device`` (``"auto"``: CUDA when present) once; imports torch."""
        from ..device import resolve_device

        if not isinstance(progress, bool):
            raise InvalidArgumentError(f"progress={progress!r} must be True or False")
        return cls(resolve_device(device), progress)

    def for_analysis(self) -> "RunContext":
        return RunContext(self.device, self.progress)

    def bar(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it"):
        """A tqdm progress bar with ETA (silent when ``progress`` is False)."""
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not self.progress)

    def warn(self, message: str) -> None:
        """Record ``message`` in provenance and emit it once as a :class:`GeomlibWarning`."""
        if message not in self.warnings:
            self.warnings.append(message)
            warnings.warn(message, GeomlibWarning, stacklevel=3)

    def skip(self, part: str, reason: str, warn: bool = True) -> None:
        """Label an optional ``part`` (a variable) as not computed, with why; warns once unless asked not to."""
        self.skipped[part] = reason
        if warn:
            self.warn(f"{part} not computed: {reason}")

    @property
    def torch_version(self) -> str:
        import torch

        return torch.__version__.split("+")[0]


#: ``attrs["pairing"]`` of each variable, from its analysis' :attr:`Analysis.pairing`
PAIRING = {
    "index": "index-paired: neuron i (head h) of layer with neuron i (head h) of layer_b, as the seeds did; "
             "confounded by the network's per-layer symmetries (see the gauge analysis)",
    "matched": "matched: layer_b's neurons and heads aligned to layer's by the optimal assignment under the "
               "model's symmetry group; invariant to those symmetries",
}


class Analysis:
    """One analysis: what it is called, its parameters, and how it runs.

    Subclass, set the class attributes, implement :meth:`run`, then
    ``geomlib.analyses.register(MyAnalysis())``.

    Class attributes
    ----------------
    name : str
        Registry key, cache file prefix, ``compute()`` keyword and CLI flag prefix.
    title : str
        One line: what it computes (CLI help, dashboard labels, report).
    schema_version : int
        Bump when the meaning or layout of a stored variable changes: old cache entries recompute.
    params : tuple of Param
        Its parameters (validated declaratively, see :mod:`geomlib.analyses.params`).
    default : bool
        Computed by default (``geomlib.compute(source)`` and ``geomlib compute``).
    sweep_default : bool or None
        Computed by default in a sweep (:func:`geomlib.sweep`, ``geomlib sweep``); None: as ``default``.
    pairing : str
        How its cross-layer variables pair units, copied into each variable's
        ``attrs["pairing"]`` unless the analysis set it: ``"index"`` (neuron i
        with neuron i, head h with head h, as the seeds did: gauge-confounded)
        or ``"matched"`` (after the optimal matching under the symmetry group).
    maps_large_blocks : bool
        Its concurrent pieces allocate and free layer-sized blocks on several
        threads: :func:`geomlib.compute` has such blocks mapped and unmapped
        (:func:`geomlib.heap.map_large_blocks`) from this analysis on, instead of
        letting every thread's heap keep its own high-water mark.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    schema_version: ClassVar[int] = 1
    params: ClassVar[tuple[Param, ...]] = ()
    default: ClassVar[bool] = True
    sweep_default: ClassVar[bool | None] = None
    pairing: ClassVar[str] = "index"
    maps_large_blocks: ClassVar[bool] = False

    def make_params(self, given: Params | dict | None = None) -> Params:
        """Validated parameters from a dict (or already made ones)."""
        if isinstance(given, Params):
            return given
        if given is not None and not isinstance(given, dict):
            raise InvalidArgumentError(
                f"parameters of the {self.name} analysis must be a dict such as {{'null_draws': 0}}, "
                f"not {type(given).__name__}"
            )
        return Params(self.name, self.params, given)

    def preflight(self, ckpt: "Checkpoint", params: Params, ctx: RunContext) -> Params:
        """Cheap checks before any analysis runs; raise to refuse.

        Return the parameters to run with: an optional part whose input is
        missing is switched off here (with one ``ctx.warn``), so the cache
        key says what was really computed.
        """
        return params

    def run(self, ckpt: "Checkpoint", params: Params, ctx: RunContext) -> "xr.Dataset":
        """Compute the analysis as a Dataset with provenance attrs (see :func:`geomlib.store.provenance`)."""
        raise NotImplementedError

    def report(self, ds: "xr.Dataset", anchor: int = -1) -> list[str]:
        """Lines of ``geomlib report`` for this analysis (none by default)."""
        return []

    def __repr__(self) -> str:
        return f"<analysis {self.name!r} v{self.schema_version}: {self.title}>"


__all__ = ["Analysis", "RunContext"]
