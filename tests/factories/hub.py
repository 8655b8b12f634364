"""A Hugging Face hub cache laid out by hand exactly as huggingface_hub 2.x writes it (see tests/io/test_hub.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

COMMIT = hashlib.sha1(b"first commit").hexdigest()
# Files the hub stores with git LFS; everything else is a regular git blob.
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def _git_blob_sha1(data: bytes) -> str:
    """The git object id of a regular file (what the hub reports as its etag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(data: bytes) -> bytes:
    """The git-LFS pointer file git stores in place of an LFS file's content."""
    return (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
    ).encode()


def cache_repo(
    cache: Path,
    repo_id: str,
    files: dict[str, bytes],
    commit: str = COMMIT,
    refs: tuple[str, ...] = ("main",),
    listed_only: dict[str, bytes] | None = None,
) -> Path:
    """Put ``files`` into the HF cache ``cache`` as snapshot ``commit`` of ``repo_id``.

    Parameters
    ----------
    files : dict of str to bytes
        Repository path -> content of the files present locally.
    refs : tuple of str
        Branch/tag names written under ``refs/`` pointing at ``commit``.
    listed_only : dict of str to bytes, optional
        Files the repository has at ``commit`` that were *not* downloaded: they
        appear in the cached tree listing but have no blob or symlink, which is
        what ``hf download --include ...`` leaves behind.

    Returns
    -------
    Path
        The snapshot directory.
    """
    storage = cache / ("models--" + repo_id.replace("/", "--"))
    blobs, snap = storage / "blobs", storage / "snapshots" / commit
    blobs.mkdir(parents=True, exist_ok=True)
    tree: dict[str, dict] = {}
    for rel, data in {**files, **(listed_only or {})}.items():
        lfs = rel.endswith(LFS_SUFFIXES)
        entry = {"size": len(data), "blob_id": _git_blob_sha1(_lfs_pointer(data) if lfs else data)}
        if lfs:
            entry.update(lfs_sha256=hashlib.sha256(data).hexdigest(), lfs_size=len(data))
        tree[rel] = entry
        if rel not in files:
            continue
        # the etag of an LFS file is its sha256, of a regular file its git sha1
        blob = blobs / (entry["lfs_sha256"] if lfs else entry["blob_id"])
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        # huggingface_hub links relative to the link's own folder (_create_symlink)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (storage / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    trees = storage / "trees"
    trees.mkdir(exist_ok=True)
    (trees / f"{commit}.json").write_text(json.dumps({"format_version": 1, "files": tree}, indent=1))
    return snap


def dir_files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
