"""Hugging Face hub repositories: the local cache first, downloads only when allowed.

``org/name`` (optionally ``org/name@revision``) resolves, in order, to

1. the snapshot already in the local HF cache (laid out by huggingface_hub:
   ``models--org--name/{refs,snapshots,blobs}``), which is all that is used
   when ``HF_HUB_OFFLINE=1``;
2. a download with huggingface_hub otherwise: the file list and
   ``config.json`` first, shards only when a layer that lives in them is read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HubError, SourceNotFoundError

REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+))?$")
_TRUE = {"1", "true", "yes", "on"}


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
    """

    repo_id: str
    revision: str | None
    cache_dir: Path
    offline: bool
    files: list[str]
    snapshot: Path | None = None
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
        The hub refused or could not be reached.
    """
    m = REPO_ID.match(source)
    if m is None:
        raise SourceNotFoundError(f"{source!r} is not a hub id of the form org/name or org/name@revision")
    repo_id, rev = m["repo"], m["rev"]
    cache = hub_cache_dir(cache_dir)
    offline = hub_offline()
    snap = _cached_snapshot(repo_id, rev, cache)
    files: list[str] | None = None
    if not offline:
        from huggingface_hub import HfApi

        try:
            files = HfApi().list_repo_files(repo_id, revision=rev)
        except Exception as exc:
            if snap is None:
                raise _hub_error(source, exc, "list the files of") from None
            # the hub is unreachable but a cached snapshot exists: use it
    if files is None:
        if snap is None:
            raise SourceNotFoundError(
                f"hub model {source} is not in the local HF cache at {cache} and HF_HUB_OFFLINE=1 forbids "
                "downloading it; unset HF_HUB_OFFLINE, set HF_HUB_CACHE to the cache that has it, or pass a local path"
            )
        files = sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())
    return HubRepo(repo_id, rev, cache, offline, sorted(files), snap)
