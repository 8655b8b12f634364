"""What is read from a model: static weights one layer at a time (:class:`Checkpoint`)
and the forward pass (:mod:`.forward`, attention entropy).  Imports torch."""

from .checkpoint import Checkpoint, open_model

__all__ = ["Checkpoint", "open_model"]
