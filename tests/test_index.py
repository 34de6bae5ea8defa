"""model_zoo_index.json: built from a copy of the fixture bundle, written atomically, read back, checked by the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common.zoo.index import (
    DEFAULT_INDEX_PATH,
    ZooIndexError,
    build_index,
    bundle_files,
    dumps_index,
    load_index,
    write_index,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny_ldm"
B = "tiny_ldm"


@pytest.fixture()
def bundles(tmp_path: Path) -> Path:
    root = tmp_path / "bundles"
    shutil.copytree(FIXTURE, root / B)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bundle_files_lists_every_shipped_file_with_size_and_sha256(bundles: Path):
    bundle = bundles / B
    (bundle / ".DS_Store").write_bytes(b"x")
    (bundle / "configs" / "__pycache__").mkdir()
    (bundle / "configs" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"x")
    (bundle / "models" / "paper").mkdir()
    (bundle / "models" / "paper" / "model.pth").write_bytes(b"downloaded")  # published weights: not shipped
    (bundle / "models" / "paper" / "sd-2-1-base").mkdir()  # user-provided resource: not shipped
    (bundle / "models" / "paper" / "sd-2-1-base" / "config.json").write_text("{}")
    files = bundle_files(bundle)
    expected = sorted(
        p.relative_to(FIXTURE).as_posix()
        for p in FIXTURE.rglob("*")
        if p.is_file()
    )
    assert [f["path"] for f in files] == expected
    assert len(expected) == 10
    for f in files:
        p = bundle / f["path"]
        assert f["size"] == p.stat().st_size > 0
        assert f["sha256"] == _sha(p) and len(f["sha256"]) == 64


def test_build_index_entry_from_metadata_and_large_files(bundles: Path):
    index = build_index(bundles)
    assert index["index_version"] == 1 and list(index["bundles"]) == [B]
    entry = index["bundles"][B]
    meta = json.loads((bundles / B / "configs" / "metadata.json").read_text())
    assert entry["name"] == B
    assert (entry["version"], entry["task"], entry["description"]) == (meta["version"], meta["task"], meta["description"])
    assert entry["depends_on"] == []
    assert entry["sources"] == {"huggingface": {"repo_id": "example-org/tiny_ldm", "revision": "main"}}
    assert entry["published_weights"] == [
        {
            "path": "models/paper/model.pth",
            "url": "https://example.org/tiny_ldm/model.pth",
            "sha256": None,  # empty hash_val: unknown
            "size": None,
            "config": "configs/paper.json",
            "hash_type": None,
            "hash_val": None,
        }
    ]
    assert entry["files"] == bundle_files(bundles / B)


def test_published_sha256_and_depends_on(bundles: Path):
    digest = "ab" * 32
    (bundles / B / "large_files.yml").write_text(
        "large_files:\n"
        f'  - {{path: "models/paper/model.pth", url: "https://example.org/a.pth", hash_val: "{digest.upper()}", hash_type: "sha256"}}\n'
        '  - {path: "models/paper/b.pth", url: "https://example.org/b.pth", hash_val: "0cc175b9c0f1b6a831c399e269772661", hash_type: "md5"}\n'
    )
    meta_path = bundles / B / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["depends_on"] = ["brain_ldm_3d"]
    meta_path.write_text(json.dumps(meta))
    entry = build_index(bundles)["bundles"][B]
    assert [(w["path"], w["sha256"], w["hash_type"], w["hash_val"]) for w in entry["published_weights"]] == [
        ("models/paper/b.pth", None, "md5", "0cc175b9c0f1b6a831c399e269772661"),  # md5 is not a sha256
        ("models/paper/model.pth", digest, "sha256", digest),
    ]
    assert entry["depends_on"] == ["brain_ldm_3d"]


def test_empty_and_missing_bundles_dir(tmp_path: Path):
    assert build_index(tmp_path) == {"index_version": 1, "bundles": {}}
    assert build_index(tmp_path / "absent") == {"index_version": 1, "bundles": {}}


def test_write_is_deterministic_atomic_and_round_trips(bundles: Path, tmp_path: Path):
    out = tmp_path / "idx" / "model_zoo_index.json"
    written = write_index(out, bundles)
    first = out.read_bytes()
    write_index(out, bundles)
    assert out.read_bytes() == first
    assert first.decode() == dumps_index(written)
    assert load_index(out) == written == build_index(bundles)
    assert sorted(p.name for p in out.parent.iterdir()) == ["model_zoo_index.json"]  # no temp file left


def test_write_failure_keeps_old_index(bundles: Path, tmp_path: Path):
    out = tmp_path / "model_zoo_index.json"
    write_index(out, bundles)
    before = out.read_bytes()
    (bundles / B / "configs" / "metadata.json").write_text("{not json")
    with pytest.raises(ZooIndexError, match=r"metadata.json: not valid JSON .*: fix the syntax"):
        write_index(out, bundles)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundles", "model_zoo_index.json"]


def test_load_index_errors(tmp_path: Path):
    with pytest.raises(ZooIndexError, match="index not found: run `python ci/build_index.py`"):
        load_index(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1,")
    with pytest.raises(ZooIndexError, match="not valid JSON"):
        load_index(bad)
    bad.write_text(json.dumps({"index_version": 2, "bundles": {}}))
    with pytest.raises(ZooIndexError, match="index_version 2 is not supported"):
        load_index(bad)
    bad.write_text(json.dumps({"index_version": 1}))
    with pytest.raises(ZooIndexError, match="no `bundles` object"):
        load_index(bad)


def test_repo_index_loads():
    index = load_index()
    assert DEFAULT_INDEX_PATH == REPO / "model_zoo_index.json"
    assert index["index_version"] == 1 and isinstance(index["bundles"], dict)


def test_build_index_cli_write_and_check(bundles: Path, tmp_path: Path):
    script = [sys.executable, str(REPO / "ci" / "build_index.py"), "--bundles-dir", str(bundles)]
    out = tmp_path / "index.json"
    proc = subprocess.run(script + ["--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}: 1 bundle(s), 10 file(s)"
    assert load_index(out) == build_index(bundles)
    check = subprocess.run(script + ["--out", str(out), "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.strip() == f"{out}: up to date"
    (bundles / B / "LICENSE").write_text("changed\n")
    check = subprocess.run(script + ["--out", str(out), "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 1
    assert check.stderr.strip() == f"error: {out} is stale: run python ci/build_index.py"


def test_build_index_cli_bad_input(tmp_path: Path):
    script = [sys.executable, str(REPO / "ci" / "build_index.py")]
    proc = subprocess.run(script + ["--bundles-dir", str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: bundles folder not found: pass --bundles-dir"
    broken = tmp_path / "b"
    (broken / "x" / "configs").mkdir(parents=True)
    out = tmp_path / "index.json"
    proc = subprocess.run(script + ["--bundles-dir", str(broken), "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {broken / 'x' / 'configs' / 'metadata.json'}: missing: every bundle needs configs/metadata.json"
    assert not out.exists()
