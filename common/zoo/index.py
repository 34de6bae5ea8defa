"""The zoo catalogue, ``model_zoo_index.json``: build it from ``bundles/``, write it, read it.

The index is derived data: every value in it comes from the bundles (``configs/metadata.json``,
``large_files.yml`` and the files themselves), so ``build_index`` is deterministic and the verifier can
rebuild it and compare to catch a stale index. Format: docs/CONTRACTS.md ("Index"). Only the standard
library, PyYAML and ``common.io.writers`` (standard library only) are imported, so downloads and the verifier
start fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from common.io.writers import write_bytes

INDEX_VERSION = 1
INDEX_FILENAME = "model_zoo_index.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLES_DIR = REPO_ROOT / "bundles"
DEFAULT_INDEX_PATH = REPO_ROOT / INDEX_FILENAME
METADATA_PATH = "configs/metadata.json"
PAPER_CONFIG = "configs/paper.json"
DOWNLOAD_DIR = "models/paper"  # published weights and user-provided resources (e.g. SD-2.1 CLIP): never shipped
LARGE_FILES_SUFFIXES = (".yml", ".yaml", ".json")
_SKIP_DIRS = {"__pycache__"}
_CHUNK = 1 << 20


class ZooIndexError(ValueError):
    """A bundle or index file that cannot be read into the catalogue; the message is one line."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks so multi-GB weights do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_large_files_file(bundle_dir: str | os.PathLike) -> Path | None:
    """The bundle's ``large_files.{yml,yaml,json}`` (the names ``monai.bundle download_large_files`` looks for)."""
    for suffix in LARGE_FILES_SUFFIXES:
        candidate = Path(bundle_dir) / f"large_files{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_large_files(bundle_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Entries of ``large_files.yml`` (MONAI format ``large_files: [{path, url, hash_val, hash_type}]``); [] if absent."""
    lf_path = find_large_files_file(bundle_dir)
    if lf_path is None:
        return []
    try:
        text = lf_path.read_text(encoding="utf-8")
        if lf_path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError / JSONDecodeError / UnicodeDecodeError
        raise ZooIndexError(f"{lf_path}: cannot parse ({type(e).__name__}): fix the YAML/JSON syntax") from None
    if data is None:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("large_files", []), list):
        raise ZooIndexError(f"{lf_path}: expected a mapping with a list under `large_files`")
    entries = data.get("large_files") or []
    for i, item in enumerate(entries):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str) or not isinstance(item.get("url"), str):
            raise ZooIndexError(f"{lf_path}: large_files[{i}] needs string `path` and `url` keys")
    return entries


def published_paths(bundle_dir: Path) -> set[str]:
    """Posix paths (relative to the bundle) of published weights: downloaded on demand, not shipped."""
    paths = set()
    for item in read_large_files(bundle_dir):
        p = item["path"].replace("\\", "/")
        while p.startswith("./"):
            p = p[2:]
        paths.add(p)
    return paths


def bundle_files(bundle_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every shipped file of a bundle as ``{path, size, sha256}``, sorted by posix path.

    Skipped: hidden files / folders, ``__pycache__``, the published weights named in ``large_files.yml`` and
    everything under ``models/paper/`` (downloaded or user-provided on demand, so their presence must not make the
    index stale).
    """
    root = Path(bundle_dir)
    if not root.is_dir():
        raise ZooIndexError(f"{root}: not a bundle directory")
    published = published_paths(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        for fname in filenames:
            if fname.startswith("."):
                continue
            full = Path(dirpath) / fname
            rel = full.relative_to(root).as_posix()
            if rel in published or rel.startswith(DOWNLOAD_DIR + "/") or not full.is_file():
                continue
            out.append({"path": rel, "size": full.stat().st_size, "sha256": sha256_file(full)})
    return sorted(out, key=lambda d: d["path"])


def _published_weights(bundle_dir: Path) -> list[dict[str, Any]]:
    """Index rows for ``large_files.yml``: an empty or non-sha256 ``hash_val`` means sha256 unknown (null).

    ``hash_type`` / ``hash_val`` repeat the published hash as given (e.g. md5), null when empty, so a download
    can still be checked when no sha256 is known.
    """
    config = PAPER_CONFIG if (bundle_dir / PAPER_CONFIG).is_file() else None
    rows = []
    for item in read_large_files(bundle_dir):
        hash_val = str(item.get("hash_val") or "").strip().lower()
        hash_type = str(item.get("hash_type") or "").strip().lower()
        sha = hash_val if hash_val and hash_type == "sha256" else None
        size = item.get("size")
        rows.append(
            {
                "path": item["path"],
                "url": item["url"],
                "sha256": sha,
                "size": int(size) if isinstance(size, int) and not isinstance(size, bool) else None,
                "config": config,
                "hash_type": hash_type if hash_val else None,
                "hash_val": hash_val or None,
            }
        )
    return sorted(rows, key=lambda d: d["path"])


def _read_json_object(path: Path, missing: str, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; one-line errors: ``missing`` when absent, ``fix`` when not a JSON object."""
    if not path.is_file():
        raise ZooIndexError(f"{path}: {missing}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooIndexError(f"{path}: not valid JSON ({e}): {fix}") from None
    if not isinstance(data, dict):
        raise ZooIndexError(f"{path}: must be a JSON object: {fix}")
    return data


def read_metadata(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json`` as a dict (one-line error when missing or not JSON)."""
    return _read_json_object(Path(bundle_dir) / METADATA_PATH, f"missing: every bundle needs {METADATA_PATH}",
                             "fix the syntax")


def index_entry(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """One bundle's catalogue entry (name is the folder name, the id users download by)."""
    bundle_dir = Path(bundle_dir)
    meta = read_metadata(bundle_dir)
    depends_on = meta.get("depends_on", [])
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        raise ZooIndexError(f"{bundle_dir / METADATA_PATH}: `depends_on` must be a list of bundle names")
    sources = meta.get("sources", {})
    if not isinstance(sources, dict):
        raise ZooIndexError(f"{bundle_dir / METADATA_PATH}: `sources` must be an object")
    return {
        "name": bundle_dir.name,
        "version": meta.get("version"),
        "task": meta.get("task"),
        "description": meta.get("description"),
        "depends_on": list(depends_on),
        "files": bundle_files(bundle_dir),
        "sources": sources,
        "published_weights": _published_weights(bundle_dir),
    }


def list_bundle_dirs(bundles_dir: str | os.PathLike) -> list[Path]:
    """Bundle folders under ``bundles_dir`` (non-hidden sub-directories), sorted; [] if it does not exist."""
    root = Path(bundles_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in _SKIP_DIRS)


def build_index(bundles_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The whole catalogue built from every bundle under ``bundles_dir`` (repo's ``bundles/`` by default)."""
    bundles_dir = DEFAULT_BUNDLES_DIR if bundles_dir is None else Path(bundles_dir)
    return {
        "index_version": INDEX_VERSION,
        "bundles": {p.name: index_entry(p) for p in list_bundle_dirs(bundles_dir)},
    }


def dumps_index(index: dict[str, Any]) -> str:
    """Canonical text of an index (sorted keys, 2-space indent, final newline) so rebuilds diff cleanly."""
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def write_index(path: str | os.PathLike | None = None, bundles_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build the index from ``bundles_dir`` and write it atomically to ``path`` (repo's index by default)."""
    path = DEFAULT_INDEX_PATH if path is None else Path(path)
    index = build_index(bundles_dir)
    text = dumps_index(index)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(text.encode("utf-8"), path)
    return index


def load_index(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read an index (repo's ``model_zoo_index.json`` by default); one-line error when missing or malformed."""
    path = DEFAULT_INDEX_PATH if path is None else Path(path)
    index = _read_json_object(path, "index not found: run `python ci/build_index.py` or pass the index path",
                              "rebuild it with `python ci/build_index.py`")
    if not isinstance(index.get("bundles"), dict):
        raise ZooIndexError(f"{path}: not a zoo index (no `bundles` object): rebuild it with `python ci/build_index.py`")
    if index.get("index_version") != INDEX_VERSION:
        raise ZooIndexError(
            f"{path}: index_version {index.get('index_version')!r} is not supported (expected {INDEX_VERSION}): "
            "update the zoo code or rebuild the index"
        )
    return index


def checked_weights(bundle_root: str | os.PathLike, path: str | os.PathLike, check: Any = True,
                    index_path: str | os.PathLike | None = None) -> str:
    """``path`` after checking a bundle's shipped weights against the sha256 the zoo index lists for them.

    Inference configs load weights through this, so a tampered, truncated or retrained file in the bundle's
    ``models/`` is refused with one line instead of sampling silently. Weights outside the bundle (``--model_dir``
    of a training run), files the index does not list and ``check=false`` (``--check_weights false``: weights you
    trained into the bundle) pass unchecked.
    """
    from common.sampling.settings import check_bool

    if not check_bool("check_weights", check):
        return str(path)
    root, file = Path(bundle_root).resolve(), Path(path).resolve()
    try:
        rel = file.relative_to(root).as_posix()
    except ValueError:
        return str(path)
    try:
        name = read_metadata(root).get("name") or root.name
        entry = load_index(index_path)["bundles"].get(name)
    except ZooIndexError:
        return str(path)
    listed = {f.get("path"): f.get("sha256") for f in (entry or {}).get("files", [])}
    expected = listed.get(rel)
    if not expected or not file.is_file():
        return str(path)
    actual = sha256_file(file)
    if actual != expected:
        raise ZooIndexError(
            f"{path}: sha256 {actual[:12]}... is not that of the {name} {entry.get('version')} weights the zoo index "
            f"lists ({expected[:12]}...): restore them with `python -m common.zoo download {name} --force`, or pass "
            "--check_weights false to use weights you trained"
        )
    return str(path)
