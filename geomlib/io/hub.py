"""Hugging Face hub repositories: the local cache first, downloads only when allowed.

``org/name`` (optionally ``org/name@revision``) resolves, in order, to

1. the snapshot already in the local HF cache (laid out by huggingface_hub:
   ``models--org--name/{refs,snapshots,blobs}``), which is all that is used
   when ``HF_HUB_OFFLINE=1``;
2. a download with huggingface_hub otherwise: the file list and
   ``config.json`` first, shards only when a layer that lives in them is read.

Before anything is downloaded the hub is asked once, with a short deadline, for
the repository's metadata (:func:`_ask_hub`).  If it cannot be reached (refused
connection, no answer, unknown host name, proxy failure) the cached snapshot is
used when there is one, and otherwise :class:`~geomlib.errors.HubError` says so
in one sentence; huggingface_hub's own retry loop, which takes about 30 s and
logs a dozen lines when the hub is down, is never entered for that question.
The deadline is ``HF_HUB_ETAG_TIMEOUT`` seconds when that variable is set
(huggingface_hub's own knob for "how long to wait for metadata before using the
cache"), else :data:`DEFAULT_HUB_TIMEOUT`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import HubError, SourceNotFoundError

REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")
_TRUE = {"1", "true", "yes", "on"}

#: Seconds the metadata question may take when ``HF_HUB_ETAG_TIMEOUT`` is
#: unset.  The hub answers it in well under a second; huggingface_hub's own
#: default (10 s) would make an unreachable hub cost more than the few seconds a
#: user should wait before being told to work offline.
DEFAULT_HUB_TIMEOUT = 3.0
#: Above this many files the hub may cut the ``siblings`` list of a model's
#: metadata short (huggingface_hub's snapshot_download stops trusting it at
#: the same size), so the file list is then paged through instead.
_SIBLINGS_TRUSTED_BELOW = 1000


def looks_like_repo_id(source: str) -> bool:
    """Whether ``source`` has the form ``org/name`` or ``org/name@revision``."""
    return REPO_ID.match(source) is not None


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The HF hub cache in effect, read from the environment at call time."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """Whether downloads are forbidden (``HF_HUB_OFFLINE``), read at call time."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def hub_timeout() -> float:
    """Seconds to wait for the hub's metadata answer, read at call time.

    ``HF_HUB_ETAG_TIMEOUT`` when set to a positive number, else
    :data:`DEFAULT_HUB_TIMEOUT`.

    Raises
    ------
    HubError
        ``HF_HUB_ETAG_TIMEOUT`` is set but is not a positive number of seconds.
    """
    text = os.environ.get("HF_HUB_ETAG_TIMEOUT", "").strip()
    if not text:
        return DEFAULT_HUB_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise HubError(
            f"HF_HUB_ETAG_TIMEOUT is {text!r}, not a positive number of seconds; set it to e.g. 10 or unset it "
            f"(default {DEFAULT_HUB_TIMEOUT:g} s)"
        )
    return value


@dataclass
class HubRepo:
    """One resolved hub repository.

    Attributes
    ----------
    repo_id, revision : str
        What was asked for (revision None means the default branch).
    files : list of str
        Every file of the repository at that revision.
    snapshot : Path or None
        The cached snapshot directory, if one exists locally.
    unreachable : str or None
        Why the hub could not be reached when the repository was resolved from
        the cache instead; nothing is downloaded then (see :meth:`fetch`).
    """

    repo_id: str
    revision: str | None
    cache_dir: Path
    offline: bool
    files: list[str]
    snapshot: Path | None = None
    unreachable: str | None = None
    _fetched: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")

    def fetch(self, filename: str) -> Path:
        """Local path of ``filename``: from the cache, else downloaded (unless offline)."""
        if filename in self._fetched:
            return self._fetched[filename]
        if self.snapshot is not None and (self.snapshot / filename).exists():
            path = self.snapshot / filename
        elif self.offline:
            raise SourceNotFoundError(
                f"{filename} of {self.label} is not in the local HF cache at {self.cache_dir} and "
                "HF_HUB_OFFLINE=1 forbids downloading it; unset HF_HUB_OFFLINE or download the model first"
            )
        elif self.unreachable is not None:
            # the hub was just found unreachable: asking again would only enter
            # huggingface_hub's retry loop (60 s timeouts when nothing is cached)
            raise HubError(
                f"{filename} of {self.label} is not in the local HF cache at {self.cache_dir} and the hub could "
                f"not be reached ({self.unreachable}); {_OFFLINE_HINT}"
            )
        else:
            from huggingface_hub import hf_hub_download

            try:
                path = Path(hf_hub_download(self.repo_id, filename, revision=self.revision, cache_dir=self.cache_dir))
            except Exception as exc:
                raise _hub_error(self.label, exc, f"download {filename} of") from None
        self._fetched[filename] = path
        return path


def _hub_error(label: str, exc: Exception, doing: str) -> HubError:
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        why = "the repository is gated: accept its terms on huggingface.co and log in with `hf auth login`"
    elif isinstance(exc, errors.RepositoryNotFoundError):
        why = "no such repository (or it is private): check the id, or log in with `hf auth login`"
    elif isinstance(exc, errors.RevisionNotFoundError):
        why = "no such revision: check the branch, tag or commit after '@'"
    elif isinstance(exc, errors.EntryNotFoundError):
        why = "the repository has no such file"
    else:
        why = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}; check the network or set HF_HUB_OFFLINE=1 to use the cache only"
    return HubError(f"could not {doing} hub repository {label} ({why})")


_OFFLINE_HINT = (
    "to work offline set HF_HUB_OFFLINE=1 with the model in the local HF cache, point --hf-cache "
    "(hf_cache_dir= in Python) at a cache that has it, or pass a local model directory"
)


class _NoAnswer(TimeoutError):
    """The metadata question outlived its deadline (no answer, or a hanging name lookup)."""


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception types meaning "the hub could not be reached", whatever HTTP client huggingface_hub uses.

    huggingface_hub 0.x uses requests, 1.x httpx and 2.x httpx2; only modules
    that are already imported are consulted (the one in use is, by then).
    """
    from huggingface_hub.errors import OfflineModeIsEnabled

    # the stdlib's own: a client that lets them through, and the deadline (_NoAnswer)
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror, OfflineModeIsEnabled]
    for module, names in (("httpx2", ("TransportError",)), ("httpx", ("TransportError",)),
                          ("requests", ("ConnectionError", "Timeout"))):
        mod = sys.modules.get(module)
        kinds.extend(k for k in (getattr(mod, n, None) for n in names) if isinstance(k, type))
    return tuple(kinds)


def _unreachable_reason(exc: BaseException, timeout: float) -> str | None:
    """A short phrase saying why the hub could not be reached, or None if ``exc`` is not a network failure."""
    from huggingface_hub.errors import HfHubHTTPError

    # huggingface_hub's HTTP errors subclass requests' HTTPError (an OSError)
    # in old versions: an answer with a status code means the hub was reached
    if isinstance(exc, HfHubHTTPError) or not isinstance(exc, _network_errors()):
        return None
    name = type(exc).__name__
    if isinstance(exc, (_NoAnswer, TimeoutError)) or "Timeout" in name:
        return (f"no answer within {timeout:g} s; set HF_HUB_ETAG_TIMEOUT to a larger number of seconds "
                "if the network is just slow")
    return _describe(exc)


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message``, on one line."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {' '.join(lines[0].split())}" if lines else type(exc).__name__


@contextmanager
def _quiet_client() -> Iterator[None]:
    """Silence huggingface_hub's logging and warnings for the duration of the block.

    Failures are reported by geomlib in one sentence; the client's own lines
    ("Retrying in 1s", stack-like warnings) would only repeat it.  The logger
    level and warning filters are restored afterwards.
    """
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call()``, or :class:`_NoAnswer` once ``seconds`` have passed without it returning.

    The call runs in a daemon thread so that a hanging name lookup (which the
    HTTP client's timeouts do not bound) can be abandoned without holding up
    the process or its exit.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="geomlib-hub-metadata", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise _NoAnswer(f"no answer within {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _ask_hub(repo_id: str, revision: str | None, timeout: float) -> list[str]:
    """The files of ``repo_id`` at ``revision``, asked of the hub once with a bounded wait.

    One metadata request (``model_info``, which huggingface_hub sends without
    its retry loop), all of it within ``timeout`` seconds.  The deadline is
    geomlib's own, not only the HTTP client's connect and read timeouts: those
    do not cover host-name resolution (which can hang for 10 s and more behind
    a resolver that drops packets), and huggingface_hub 2.x first fetches an
    "agent harness" list from the hub, with its own 3 s timeout, when it builds
    the request's User-Agent (once a day, unless HF_HUB_DISABLE_TELEMETRY=1).  Its
    ``siblings`` are the file list unless the repository is large enough for
    the hub to cut that list short; then the hub, just shown to be reachable,
    is paged through with ``list_repo_files`` (no deadline: many pages may
    legitimately take longer).

    Raises
    ------
    Exception
        Whatever huggingface_hub raised, or :class:`_NoAnswer` at the deadline.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    with _quiet_client():
        info = _within(timeout, lambda: api.model_info(repo_id, revision=revision, timeout=timeout))
        siblings = info.siblings
        if siblings is not None and len(siblings) < _SIBLINGS_TRUSTED_BELOW:
            return [s.rfilename for s in siblings]
        return list(api.list_repo_files(repo_id, revision=revision))


def _cached_snapshot(repo_id: str, revision: str | None, cache_dir: Path) -> Path | None:
    from huggingface_hub import snapshot_download

    try:
        snap = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except Exception as exc:  # not cached (LocalEntryNotFoundError) or cache unreadable
        # recent huggingface_hub raises IncompleteSnapshotError (with the snapshot's
        # path) when the cached tree listing names files that were never downloaded,
        # e.g. after ``hf download --include``; geomlib needs only config and
        # weights, and checks their presence itself
        partial = getattr(exc, "snapshot_path", None)
        if partial is None:
            return None
        snap = Path(partial)
    return snap if snap.is_dir() else None


def open_hub(source: str, cache_dir: str | os.PathLike | None = None) -> HubRepo:
    """Resolve ``org/name[@revision]`` against the cache, then the hub.

    Raises
    ------
    SourceNotFoundError
        Offline and not cached.
    HubError
        The hub refused, or could not be reached and the model is not cached;
        the wait is bounded by :func:`hub_timeout`.
    """
    m = REPO_ID.match(source)
    if m is None:
        raise SourceNotFoundError(f"{source!r} is not a hub id of the form org/name or org/name@revision")
    repo_id, rev = m["repo"], m["rev"]
    cache = hub_cache_dir(cache_dir)
    offline = hub_offline()
    snap = _cached_snapshot(repo_id, rev, cache)
    files: list[str] | None = None
    unreachable: str | None = None
    if not offline:
        timeout = hub_timeout()
        try:
            files = _ask_hub(repo_id, rev, timeout)
        except Exception as exc:
            unreachable = _unreachable_reason(exc, timeout)
            if snap is None and unreachable is not None:
                from huggingface_hub import constants

                raise HubError(
                    f"could not reach the Hugging Face hub at {constants.ENDPOINT} to resolve {source} "
                    f"({unreachable}) and it is not in the local HF cache at {cache}; {_OFFLINE_HINT}"
                ) from None
            if snap is None:
                raise _hub_error(source, exc, "list the files of") from None
            # the hub is unreachable or refused (5xx, expired token) but a cached
            # snapshot exists: use it, and download nothing more this time
            unreachable = unreachable or _describe(exc)
    if files is None:
        if snap is None:
            raise SourceNotFoundError(
                f"hub model {source} is not in the local HF cache at {cache} and HF_HUB_OFFLINE=1 forbids "
                "downloading it; unset HF_HUB_OFFLINE, set HF_HUB_CACHE to the cache that has it, or pass a local path"
            )
        files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    return HubRepo(repo_id, rev, cache, offline, sorted(files), snap, unreachable)
