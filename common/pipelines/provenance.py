"""``OUT/provenance.json``: what each finished step ran on and wrote, and whether a rerun may skip it.

A step's fingerprint covers what decides its outputs: the bundle's name, version, weights (sha256) and config
files (sha256), the overrides (with ``{out}``/``{step:NAME}`` unsubstituted, so moving OUT changes nothing),
the foreach items or the glue function and its keywords, the fingerprints of the earlier steps it reads, and
the content of any existing file or folder an override names. A rerun skips a step whose fingerprint matches
and whose recorded outputs are all there with the same sha256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from common.zoo.index import sha256_file

FILE_NAME = "provenance.json"
FORMAT = 1


def folder_files(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under a folder (sorted, hidden temp files skipped)."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if not any(part.startswith(".") for part in Path(rel).parts):
            out[rel] = sha256_file(path)
    return out


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def input_digests(values: Any) -> dict[str, str]:
    """sha256 of each existing file (or of the listing and contents of each folder) named by a string value."""
    out = {}
    for text in _strings(values):
        if "{" in text or len(text) > 4096:
            continue
        path = Path(text)
        try:
            if path.is_file():
                out[text] = sha256_file(path)
            elif path.is_dir():
                out[text] = hashlib.sha256(json.dumps(folder_files(path), sort_keys=True).encode()).hexdigest()
        except OSError:
            continue
    return out


def fingerprint(description: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()


class Provenance:
    """The record of one pipeline output folder; written atomically after every finished step."""

    def __init__(self, output_dir: Path, pipeline: str) -> None:
        self.path = output_dir / FILE_NAME
        self.pipeline = pipeline
        self.steps: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("format") == FORMAT and data.get("pipeline") == pipeline:
                    self.steps = {s["name"]: s for s in data.get("steps", [])}
            except (ValueError, KeyError, TypeError, AttributeError):
                self.steps = {}  # unreadable: every step runs again and the file is rewritten

    def is_current(self, name: str, print_: str, folder: Path) -> bool:
        """The step finished before with this fingerprint and its outputs are unchanged."""
        record = self.steps.get(name)
        if not record or record.get("status") != "complete" or record.get("fingerprint") != print_:
            return False
        if not folder.is_dir():
            return False
        return folder_files(folder) == record.get("outputs")

    def record(self, entry: Mapping[str, Any]) -> None:
        from common.io.writers import write_json

        self.steps[entry["name"]] = dict(entry)
        write_json({"format": FORMAT, "pipeline": self.pipeline, "steps": list(self.steps.values())}, self.path)

    def fingerprint_of(self, name: str) -> str | None:
        record = self.steps.get(name)
        return record.get("fingerprint") if record else None
