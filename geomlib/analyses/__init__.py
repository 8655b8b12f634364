"""The analyses: one module per analysis, one protocol, one registry.

``geomlib.analyses.names()`` lists them; :class:`Analysis` is the protocol;
:func:`register` adds one (see the README's "add an analysis").  Importing
this package imports no torch: only an analysis' ``run`` does.
"""

from .base import Analysis, RunContext
from .gauge import Gauge
from .heads import Heads
from .params import Param, Params
from .registry import defaults, get, names, register, resolve, unregister
from .spectra import Spectra
from .weights import Weights

register(Weights())
register(Heads())
register(Gauge())
register(Spectra())

__all__ = ["Analysis", "Param", "Params", "RunContext", "defaults", "get", "names", "register", "resolve",
           "unregister"]
