"""Hugging Face hub source: one file at a pinned revision through ``hf_hub_download`` and its cache.

huggingface_hub does the HTTP (``HF_ENDPOINT``), the progress bar, the resumable download to a unique
``.incomplete`` file, the cache (``HF_HOME`` / ``HF_HUB_CACHE``) and offline mode (``HF_HUB_OFFLINE``);
this module adds the zoo's rule on top: the cached bytes must match the index's sha256, else they are
deleted from the cache and the user is told. Every hub error becomes a one-line ``DownloadError``.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.zoo.errors import DownloadError, one_line
from common.zoo.index import sha256_file

DEFAULT_HF_ORG = "monai-generative-zoo"
"""Hub namespace of the zoo's bundles: repo ``<DEFAULT_HF_ORG>/<bundle>`` unless the bundle's metadata
``sources.huggingface.repo_id`` names another one."""


def hub_source(name: str, entry: dict) -> tuple[str, str]:
    """(repo_id, revision) of a bundle: the index's ``sources.huggingface`` or the zoo default.

    The revision is the commit pinned in the index when there is one, else the version tag that
    ``ci/push_bundle.py`` creates (the same tag ``monai.bundle download --version`` asks for).
    """
    hf = (entry.get("sources") or {}).get("huggingface") or {}
    repo_id = hf.get("repo_id") or f"{DEFAULT_HF_ORG}/{name}"
    revision = hf.get("revision") or entry.get("version")
    if not revision:
        raise DownloadError(f"{name}: the index gives neither a hub revision nor a version: rebuild the index")
    return repo_id, str(revision)


def evict(cached: str | os.PathLike) -> None:
    """Delete a cached file: the snapshot link and the blob it points to (so no later run trusts it)."""
    cached = Path(cached)
    blob = Path(os.path.realpath(cached))
    cached.unlink(missing_ok=True)
    if blob != cached:
        blob.unlink(missing_ok=True)


def hub_file(
    repo_id: str,
    revision: str,
    path: str,
    *,
    expected_sha256: str | None,
    expected_size: int | None,
    label: str,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Path of ``path`` at ``revision`` in the local hub cache, downloaded if needed and sha256-checked.

    A cached file whose bytes do not match the index is deleted from the cache and reported (a mismatch is
    never silently re-downloaded: the source itself would be wrong, or the index stale).
    """
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # huggingface_hub < 1.0 named the remote 404 EntryNotFoundError
    RemoteEntryNotFoundError = getattr(hf_errors, "RemoteEntryNotFoundError", hf_errors.EntryNotFoundError)

    where = f"{repo_id}@{revision}"
    try:
        cached = hf_hub_download(repo_id, path, revision=revision, cache_dir=cache_dir)
    except LocalEntryNotFoundError as e:
        if _offline():
            raise DownloadError(
                f"{label}: not in the local hub cache and HF_HUB_OFFLINE=1 forbids the network: run the "
                "download once online, or unset HF_HUB_OFFLINE"
            ) from None
        cause = one_line(e.__cause__) if e.__cause__ else "the hub could not be reached"
        raise DownloadError(
            f"{label}: cannot download from {where} and it is not cached ({cause[:160]}): check the network "
            "and HF_ENDPOINT, then run the command again"
        ) from None
    except RemoteEntryNotFoundError:
        raise DownloadError(
            f"{label}: not found in hub repo {where} (HTTP 404): push the bundle with ci/push_bundle.py "
            "or fix sources.huggingface in its metadata"
        ) from None
    except RevisionNotFoundError:
        raise DownloadError(
            f"{label}: revision {revision} not found in hub repo {repo_id}: push that version with "
            "ci/push_bundle.py or rebuild the index"
        ) from None
    except GatedRepoError:
        raise DownloadError(f"{label}: hub repo {repo_id} is gated: accept its terms and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise DownloadError(
            f"{label}: hub repo {repo_id} not found (or private): check sources.huggingface.repo_id, "
            "log in for a private repo, or try --source url"
        ) from None
    except HfHubHTTPError as e:
        raise DownloadError(f"{label}: hub error for {where}: {one_line(e)[:200]}: run the command again later") from None
    except (OSError, ValueError, *_transport_errors()) as e:  # cut connection, size check, disk full, bad endpoint
        raise DownloadError(
            f"{label}: download from {where} failed ({type(e).__name__}: {one_line(e)[:200]}): nothing was kept; "
            "run the command again"
        ) from None
    cached = Path(cached)
    size = cached.stat().st_size
    if expected_size is not None and size != expected_size:
        evict(cached)
        raise DownloadError(
            f"{label}: {where} gave {size} bytes but the index says {expected_size}: deleted it from the hub "
            "cache; the hub repo or the index is stale"
        )
    got = sha256_file(cached)
    if expected_sha256 is not None and got != expected_sha256.lower():
        evict(cached)
        raise DownloadError(
            f"{label}: sha256 mismatch (expected {expected_sha256}, got {got}): deleted the downloaded file from "
            f"the hub cache; {where} is corrupt or the index is stale"
        )
    return cached


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client errors huggingface_hub lets through (httpx2 in 2.x, httpx in 1.x, requests before)."""
    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())
