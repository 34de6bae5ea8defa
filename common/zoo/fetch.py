"""Plain-URL downloads: streamed, hashed while they arrive, size- and sha256-checked, renamed into place last.

Used for the index's ``url`` source and for published weights hosted outside any hub (the GenerativeModels
Google Drive checkpoints). A file only ever appears under its final name once it is complete and its
sha256 matched; until then it is a hidden ``.<name>.<random>.partial`` file that is deleted on any error.
Standard library only (plus tqdm for the progress bar), so the CLI starts fast.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from common.zoo.errors import DownloadError, one_line

CHUNK = 1 << 20
USER_AGENT = "monai-generative-zoo"
_TRUE = {"1", "on", "yes", "true"}


def offline_mode() -> bool:
    """Whether the user forbade the network, with huggingface_hub's variables (``HF_HUB_OFFLINE``)."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def progress_disabled() -> bool:
    """Honour huggingface_hub's switch so both sources show (or hide) bars alike."""
    return os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower() in _TRUE


def google_drive_direct(url: str) -> str:
    """Rewrite a ``drive.google.com/uc?id=ID`` link to the direct download that skips the virus-scan page.

    Large Drive files otherwise answer with an HTML confirmation page instead of the bytes.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.netloc != "drive.google.com" or parts.path != "/uc":
        return url
    file_id = urllib.parse.parse_qs(parts.query).get("id", [""])[0]
    if not file_id:
        return url
    query = urllib.parse.urlencode({"id": file_id, "export": "download", "confirm": "t"})
    return f"https://drive.usercontent.google.com/download?{query}"


def partial_files(dest: Path) -> list[Path]:
    """Leftover partial downloads of ``dest`` (from a killed run), which are never taken for the file."""
    if not dest.parent.is_dir():
        return []
    return sorted(dest.parent.glob(f".{dest.name}.*.partial"))


def fetch_url(
    url: str,
    dest: str | os.PathLike,
    *,
    expected_sha256: str | None,
    expected_size: int | None = None,
    allow_unknown_hash: bool = False,
    other_hash: tuple[str, str] | None = None,
    label: str | None = None,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``dest`` atomically and return the file's sha256.

    A known ``expected_sha256`` must match (else the bytes are deleted and a ``DownloadError`` names both
    hashes); an unknown one (``None``) is refused unless ``allow_unknown_hash`` is set, because nothing
    would then vouch for the bytes. ``other_hash`` = (hashlib name, hex), e.g. the md5 a publisher gave,
    is checked as well.
    """
    dest = Path(dest)
    label = label or dest.name
    if expected_sha256 is None and not allow_unknown_hash:
        raise DownloadError(
            f"{label}: the index records no sha256 for this file, so it cannot be checked: "
            "pass --allow-unknown-hash to download it anyway (its sha256 is printed)"
        )
    if offline_mode():
        raise DownloadError(
            f"{label}: not downloaded yet and HF_HUB_OFFLINE=1 forbids the network: unset HF_HUB_OFFLINE "
            f"or place the file at {dest}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in partial_files(dest):
        stale.unlink(missing_ok=True)
    tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        other = hashlib.new(other_hash[0]) if other_hash else None
        got_sha, n_bytes = _stream_to(google_drive_direct(url), url, tmp, dest, expected_size, label, timeout, other)
        if expected_size is not None and n_bytes != expected_size:
            raise DownloadError(
                f"{label}: got {n_bytes} bytes but the index says {expected_size}: deleted the download; "
                "the source or the index is stale"
            )
        if expected_sha256 is not None and got_sha != expected_sha256.lower():
            raise DownloadError(
                f"{label}: sha256 mismatch (expected {expected_sha256}, got {got_sha}): deleted the downloaded "
                "file; the source is corrupt or the index is stale"
            )
        if other_hash is not None and other is not None and other.hexdigest() != other_hash[1].lower():
            raise DownloadError(
                f"{label}: {other_hash[0]} mismatch (expected {other_hash[1]}, got {other.hexdigest()}): deleted the "
                "downloaded file; the source changed or the published hash is wrong"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return got_sha


def _stream_to(
    url: str,
    shown_url: str,
    tmp: Path,
    dest: Path,
    expected_size: int | None,
    label: str,
    timeout: float,
    other: "hashlib._Hash | None" = None,
) -> tuple[str, int]:
    """Stream one HTTP(S) body into ``tmp``; return (sha256, bytes). Every network failure is one line."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    n_bytes = 0
    total: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            content_type = response.headers.get("Content-Type", "")
            if "text/html" in content_type and dest.suffix.lower() not in {".html", ".htm"}:
                raise DownloadError(
                    f"{label}: {shown_url} answered with an HTML page, not the file (a login or confirmation "
                    f"page): download it in a browser and place it at {dest}"
                )
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else expected_size
            with open(tmp, "wb") as f, tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label[-40:],
                disable=True if progress_disabled() else None,  # None: shown on a terminal only, like the hub's
                file=sys.stderr,
            ) as bar:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    if other is not None:
                        other.update(chunk)
                    n_bytes += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DownloadError(
            f"{label}: HTTP {e.code} {e.reason} for {shown_url}: check the URL in the index, or try --source huggingface"
        ) from None
    except urllib.error.URLError as e:
        raise DownloadError(
            f"{label}: cannot reach {shown_url} ({one_line(e.reason)}): check the network, or set HF_HUB_OFFLINE=1 "
            "to use files already downloaded"
        ) from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise DownloadError(
            f"{label}: connection lost after {n_bytes} bytes ({type(e).__name__}): nothing was kept; run the command again"
        ) from None
    if length and length.isdigit() and n_bytes != int(length):
        raise DownloadError(
            f"{label}: connection cut after {n_bytes} of {length} bytes: nothing was kept; run the command again"
        )
    return digest.hexdigest(), n_bytes
