"""Download zoo bundles by name, every file checked against the index's size and sha256.

Two phases, so that a failure leaves nothing half-installed: first every missing file is fetched and
checked (into the hub cache, or into a hidden staging folder for the ``url`` source); only when all of
them passed are they copied into ``<dir>/<bundle>/`` (each through a temporary name and an atomic rename).
Files already present with the right sha256 are kept, which also makes a re-run cheap and offline-safe;
files present with other bytes are only replaced with ``force``. Published (paper) weights with an
unknown sha256 need ``allow_unknown_hash`` and their obtained sha256 is reported.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import tempfile
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from common.io.writers import missing_folders, remove_empty_folders
from common.zoo.errors import DownloadError
from common.zoo.fetch import fetch_url
from common.zoo.hub import hub_file, hub_source
from common.zoo.index import sha256_file
from common.zoo.published import published_weights

SOURCES = ("huggingface", "url")
DEFAULT_DIR = Path("bundles")

Log = Callable[[str], None]


@dataclass
class Outcome:
    """What one bundle's download did, for the summary line and for tests."""

    name: str
    version: str | None
    bundle_dir: Path
    downloaded: list[str] = field(default_factory=list)
    up_to_date: list[str] = field(default_factory=list)
    unknown_hashes: dict[str, str] = field(default_factory=dict)


def get_entry(index: dict[str, Any], name: str) -> dict[str, Any]:
    """The index entry of ``name``; unknown names get the closest match in the one-line error."""
    bundles = index.get("bundles", {})
    if name in bundles:
        return bundles[name]
    close = difflib.get_close_matches(name, list(bundles), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise DownloadError(
        f"unknown bundle {name!r}: {hint}`python -m common.zoo list` shows the {len(bundles)} bundle(s) of the index"
    )


def check_version(name: str, entry: dict[str, Any], version: str | None) -> None:
    """The index knows the checksums of one version per bundle: any other cannot be checked, so refuse it."""
    if version is not None and str(version) != str(entry.get("version")):
        raise DownloadError(
            f"{name}: version {version} is not in the index (it lists {entry.get('version')}): use "
            f"--version {entry.get('version')} or update the checkout to an index that lists {version}"
        )


def with_dependencies(index: dict[str, Any], name: str) -> list[str]:
    """``name`` and the bundles it ``depends_on``, dependencies first, each once."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(n: str, parent: str | None) -> None:
        if n in order:
            return
        if n in visiting:
            raise DownloadError(f"{n}: depends_on forms a cycle: fix the bundles' metadata depends_on lists")
        if parent is not None and n not in index.get("bundles", {}):
            raise DownloadError(f"{parent} depends on {n!r}, which the index does not list: rebuild the index")
        visiting.add(n)
        for dep in get_entry(index, n).get("depends_on") or []:
            visit(dep, n)
        visiting.discard(n)
        order.append(n)

    visit(name, None)
    return order


def safe_relpath(name: str, path: str) -> PurePosixPath:
    """A bundle-relative path from the index, refused if it could escape the bundle folder."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or "\\" in path:
        raise DownloadError(f"{name}: index path {path!r} is not a plain relative path: rebuild the index")
    return rel


def file_state(path: Path, sha256: str | None, size: int | None) -> str:
    """'missing', 'ok' (size and sha256 match), 'differs', or 'unchecked' (present, no sha256 known)."""
    if not path.is_file():
        return "missing"
    if size is not None and path.stat().st_size != size:
        return "differs"
    if sha256 is None:
        return "unchecked"
    return "ok" if sha256_file(path) == sha256.lower() else "differs"


def install(src: Path, dst: Path) -> None:
    """Copy a checked file into place: a temporary name beside ``dst``, then an atomic rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def url_for(base: str, path: PurePosixPath) -> str:
    """The URL of a bundle file under the index's ``sources.url`` base."""
    return base.rstrip("/") + "/" + urllib.parse.quote(path.as_posix())


def download_bundle(
    index: dict[str, Any],
    name: str,
    *,
    dest_root: str | os.PathLike = DEFAULT_DIR,
    source: str = "huggingface",
    version: str | None = None,
    force: bool = False,
    cache_dir: str | os.PathLike | None = None,
    log: Log = print,
) -> Outcome:
    """Fetch every file of one bundle into ``dest_root/name``; all checked before any is installed."""
    if source not in SOURCES:
        raise DownloadError(f"unknown source {source!r}: use one of {', '.join(SOURCES)}")
    entry = get_entry(index, name)
    check_version(name, entry, version)
    bundle_dir = Path(dest_root) / name
    outcome = Outcome(name, entry.get("version"), bundle_dir)
    todo, conflicts = [], []
    for f in entry.get("files") or []:
        rel = safe_relpath(name, f["path"])
        state = file_state(bundle_dir / rel, f.get("sha256"), f.get("size"))
        if state == "ok":
            outcome.up_to_date.append(rel.as_posix())
        elif state == "missing" or force:
            todo.append((rel, f))
        else:
            conflicts.append(rel.as_posix())
    if conflicts:
        raise DownloadError(
            f"{name}: {len(conflicts)} file(s) in {bundle_dir} differ from the index (first: {conflicts[0]}): "
            "pass --force to overwrite them, or choose another --dir"
        )
    if not todo:
        return outcome
    staged: list[tuple[Path, Path]] = []
    staging: Path | None = None
    try:
        if source == "huggingface":
            repo_id, revision = hub_source(name, entry)
            log(f"{name}: {len(todo)} file(s) from hub {repo_id}@{revision}")
            for rel, f in todo:
                cached = hub_file(
                    repo_id,
                    revision,
                    rel.as_posix(),
                    expected_sha256=f.get("sha256"),
                    expected_size=f.get("size"),
                    label=f"{name}/{rel}",
                    cache_dir=cache_dir,
                )
                staged.append((cached, bundle_dir / rel))
        else:
            base = (entry.get("sources") or {}).get("url")
            if not base:
                raise DownloadError(f"{name}: the index gives no url source for this bundle: use --source huggingface")
            Path(dest_root).mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".zoo-download-{name}-", dir=dest_root))
            log(f"{name}: {len(todo)} file(s) from {base}")
            for rel, f in todo:
                fetch_url(
                    url_for(base, rel),
                    staging / rel,
                    expected_sha256=f.get("sha256"),
                    expected_size=f.get("size"),
                    label=f"{name}/{rel}",
                )
                staged.append((staging / rel, bundle_dir / rel))
        for src, dst in staged:
            install(src, dst)
            outcome.downloaded.append(dst.relative_to(bundle_dir).as_posix())
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return outcome


def other_hash(name: str, row: dict[str, Any]) -> tuple[str, str] | None:
    """The publisher's own hash of a published file (``hash_type`` / ``hash_val``, e.g. md5), if it gave one."""
    kind, value = (row.get("hash_type") or "").lower(), row.get("hash_val")
    if not kind or not value or kind == "sha256":
        return None
    if kind not in hashlib.algorithms_available:
        raise DownloadError(f"{name}/{row.get('path')}: unknown hash_type {kind!r} in the index: fix large_files.yml")
    return kind, str(value)


def published_state(name: str, path: Path, row: dict[str, Any]) -> str:
    """``file_state`` of a published file, with the publisher's own hash (e.g. md5) checked when no sha256 is known."""
    state = file_state(path, row.get("sha256"), row.get("size"))
    check = other_hash(name, row)
    if state == "unchecked" and check is not None:
        digest = hashlib.new(check[0])
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        return "differs" if digest.hexdigest() != check[1].lower() else "unchecked"
    return state


def download_published(
    index: dict[str, Any],
    name: str,
    *,
    dest_root: str | os.PathLike = DEFAULT_DIR,
    allow_unknown_hash: bool = False,
    force: bool = False,
    log: Log = print,
) -> Outcome:
    """Fetch a bundle's published (paper) weights from their URLs into ``dest_root/name/<path>``."""
    entry = get_entry(index, name)
    rows = published_weights(name, entry)
    if not rows:
        raise DownloadError(f"{name}: the index lists no published weights for this bundle: download it without --published")
    bundle_dir = Path(dest_root) / name
    outcome = Outcome(name, entry.get("version"), bundle_dir)
    todo = []
    for row in rows:
        rel = safe_relpath(name, row["path"])
        state = published_state(name, bundle_dir / rel, row)
        if state == "ok" or (state == "unchecked" and not force):
            outcome.up_to_date.append(rel.as_posix())
        elif state == "differs" and not force:
            raise DownloadError(
                f"{name}/{rel}: present but differs from the index: pass --force to overwrite it, or choose another --dir"
            )
        else:
            todo.append((rel, row))
    unknown = [rel.as_posix() for rel, row in todo if not row.get("sha256")]
    if unknown and not allow_unknown_hash:
        raise DownloadError(
            f"{name}: {len(unknown)} published file(s) have no recorded sha256 (first: {unknown[0]}), so they cannot "
            "be checked: pass --allow-unknown-hash to download them anyway (their sha256 is printed)"
        )
    # folders this call creates (e.g. models/paper): removed again if a failed download leaves them empty
    created = missing_folders(*((bundle_dir / rel).parent for rel, _ in todo))
    try:
        for rel, row in todo:
            log(f"{name}/{rel}: from {row['url']}")
            got = fetch_url(
                row["url"],
                bundle_dir / rel,
                expected_sha256=row.get("sha256"),
                expected_size=row.get("size"),
                allow_unknown_hash=allow_unknown_hash,
                other_hash=other_hash(name, row),
                label=f"{name}/{rel}",
            )
            outcome.downloaded.append(rel.as_posix())
            if not row.get("sha256"):
                outcome.unknown_hashes[rel.as_posix()] = got
    except BaseException:
        remove_empty_folders(created)
        raise
    return outcome


def verify_local(index: dict[str, Any], name: str, dest_root: str | os.PathLike = DEFAULT_DIR) -> list[str]:
    """Problems of a downloaded bundle against the index (missing / wrong size / wrong sha256); [] if sound.

    Published weights are checked when present (and reported with their sha256 when the index has none).
    """
    entry = get_entry(index, name)
    bundle_dir = Path(dest_root) / name
    problems = []
    for f in entry.get("files") or []:
        rel = safe_relpath(name, f["path"])
        state = file_state(bundle_dir / rel, f.get("sha256"), f.get("size"))
        if state != "ok":
            problems.append(f"{rel}: {state}")
    for row in published_weights(name, entry):
        rel = safe_relpath(name, row["path"])
        state = published_state(name, bundle_dir / rel, row)
        if state == "differs":
            problems.append(f"{rel}: differs (published weights)")
    return problems


def unchecked_published(index: dict[str, Any], name: str, dest_root: str | os.PathLike = DEFAULT_DIR) -> dict[str, str]:
    """Published weights present on disk whose sha256 the index does not know: path -> sha256 measured now."""
    entry = get_entry(index, name)
    bundle_dir = Path(dest_root) / name
    out = {}
    for row in published_weights(name, entry):
        p = bundle_dir / safe_relpath(name, row["path"])
        if not row.get("sha256") and p.is_file():
            out[row["path"]] = sha256_file(p)
    return out
