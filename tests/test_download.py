"""Downloads by name (issue 7): `python -m common.zoo` against a real HTTP server on 127.0.0.1.

The hub source runs as a subprocess with HF_ENDPOINT / HF_HUB_OFFLINE / HF_HUB_CACHE in its environment,
as a user runs it (huggingface_hub reads them at import). Nothing here reaches the internet.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer  # noqa: E402

from common.zoo import __main__ as cli  # noqa: E402
from common.zoo.fetch import google_drive_direct  # noqa: E402
from common.zoo.published import PUBLISHED_WEIGHTS, large_files_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ORG = "monai-generative-zoo"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_files(seed: int, weights_size: int = 200_000) -> dict[str, bytes]:
    rng = hashlib.sha256(str(seed).encode()).digest()
    weights = (rng * (weights_size // len(rng) + 1))[:weights_size]
    return {
        "configs/metadata.json": json.dumps({"version": "0.1.0", "monai_version": "1.6.1", "name": f"toy{seed}"}).encode(),
        "configs/inference.json": json.dumps({"seed": seed}).encode(),
        "models/model.safetensors": weights,
    }


def entry(name: str, files: dict[str, bytes], **extra) -> dict:
    return {
        "name": name,
        "version": "0.1.0",
        "task": "toy task",
        "description": "a toy bundle",
        "depends_on": [],
        "files": [{"path": p, "size": len(b), "sha256": sha(b)} for p, b in sorted(files.items())],
        "sources": {},
        "published_weights": [],
        **extra,
    }


def write_index(path: Path, bundles: dict[str, dict]) -> Path:
    path.write_text(json.dumps({"index_version": 1, "bundles": bundles}))
    return path


@pytest.fixture()
def server():
    with HubServer() as s:
        yield s


def run_cli(args: list[str], tmp_path: Path, server: HubServer, offline: bool = False, **popen) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        HF_ENDPOINT=server.endpoint,
        HF_HUB_OFFLINE="1" if offline else "0",
        TRANSFORMERS_OFFLINE="1" if offline else "0",
        HF_HUB_CACHE=str(tmp_path / "hub-cache"),
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(REPO),
    )
    return subprocess.run(
        [sys.executable, "-m", "common.zoo", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def cache_blobs(tmp_path: Path) -> list[Path]:
    """Complete-looking files of the hub cache (blobs), i.e. not huggingface_hub's `.incomplete` temporaries."""
    root = tmp_path / "hub-cache"
    return [p for p in root.rglob("blobs/*") if p.is_file() and not p.name.endswith(".incomplete")] if root.exists() else []


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_hub_download_with_dependency_then_offline_from_warm_cache(tmp_path: Path, server: HubServer, capsys) -> None:
    base, top = make_files(1), make_files(2)
    server.add_repo(f"{ORG}/base", base, tags=("0.1.0",))
    server.add_repo(f"{ORG}/top", top, tags=("0.1.0",))
    index = write_index(tmp_path / "index.json", {"base": entry("base", base), "top": entry("top", top, depends_on=["base"])})

    r = run_cli(["--index", str(index), "download", "top", "--dir", "out"], tmp_path, server)
    assert r.returncode == 0, r.stderr
    for name, files in (("base", base), ("top", top)):
        for rel, data in files.items():
            assert (tmp_path / "out" / name / rel).read_bytes() == data
    assert "top 0.1.0: 3 file(s)" in r.stdout and "sha256 OK" in r.stdout
    assert any(p.startswith("/cdn/") for _, p in server.requests), "weights must come through the LFS redirect"

    # a second run finds every file in place and asks the server nothing (in-process: no hub call is made)
    n_before = len(server.requests)
    assert cli.main(["--index", str(index), "download", "top", "--dir", str(tmp_path / "out")]) == 0
    assert "(0 new, 3 already present), sha256 OK" in capsys.readouterr().out
    assert len(server.requests) == n_before

    # offline, warm cache: the files come from the hub cache; the server sees no request at all
    for p in sorted((tmp_path / "out").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    r = run_cli(["--index", str(index), "download", "top", "--dir", "out"], tmp_path, server, offline=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out/top/models/model.safetensors").read_bytes() == top["models/model.safetensors"]
    assert len(server.requests) == n_before

    out = str(tmp_path / "out")
    assert cli.main(["--index", str(index), "verify", "--dir", out]) == 0
    assert "top: 3 file(s) match the index" in capsys.readouterr().out
    (tmp_path / "out/top/configs/inference.json").write_text('{"seed": 99}')
    assert cli.main(["--index", str(index), "verify", "top", "--dir", out]) == 1
    assert "configs/inference.json: differs" in capsys.readouterr().out
    assert cli.main(["--index", str(index), "download", "top", "--dir", out, "--no-deps"]) == 1
    assert "--force" in one_error_line(capsys.readouterr().err)
    r = run_cli(["--index", str(index), "download", "top", "--dir", "out", "--no-deps", "--force"], tmp_path, server)
    assert r.returncode == 0 and (tmp_path / "out/top/configs/inference.json").read_bytes() == top["configs/inference.json"]


def test_offline_cold_cache_is_one_line_error(tmp_path: Path, server: HubServer) -> None:
    files = make_files(3)
    index = write_index(tmp_path / "index.json", {"toy": entry("toy", files)})
    r = run_cli(["--index", str(index), "download", "toy", "--dir", "out"], tmp_path, server, offline=True)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "HF_HUB_OFFLINE" in line and "not in the local hub cache" in line
    assert not (tmp_path / "out" / "toy").exists()
    assert server.requests == []


def test_hub_404_installs_nothing(tmp_path: Path, server: HubServer) -> None:
    files = make_files(4)
    server.add_repo(f"{ORG}/toy", {k: v for k, v in files.items() if k != "models/model.safetensors"}, tags=("0.1.0",))
    index = write_index(tmp_path / "index.json", {"toy": entry("toy", files), "ghost": entry("ghost", files)})
    r = run_cli(["--index", str(index), "download", "toy", "--dir", "out"], tmp_path, server)
    assert r.returncode == 1
    assert "toy/models/model.safetensors: not found in hub repo" in one_error_line(r.stderr)
    assert not (tmp_path / "out" / "toy").exists(), "the files that did download must not be installed alone"
    r = run_cli(["--index", str(index), "download", "ghost", "--dir", "out"], tmp_path, server)
    assert r.returncode == 1 and f"hub repo {ORG}/ghost not found" in one_error_line(r.stderr)


def test_hub_checksum_mismatch_deletes_the_file(tmp_path: Path, server: HubServer) -> None:
    files = make_files(5)
    bad = dict(files, **{"models/model.safetensors": files["models/model.safetensors"][:-1] + b"\x00"})
    server.add_repo(f"{ORG}/toy", bad, tags=("0.1.0",))
    index = write_index(tmp_path / "index.json", {"toy": entry("toy", files)})
    r = run_cli(["--index", str(index), "download", "toy", "--dir", "out"], tmp_path, server)
    assert r.returncode == 1
    line = one_error_line(r.stderr)
    assert "sha256 mismatch" in line and sha(bad["models/model.safetensors"]) in line and "deleted" in line
    assert not (tmp_path / "out" / "toy").exists()
    blobs = [b.read_bytes() for b in cache_blobs(tmp_path)]
    assert bad["models/model.safetensors"] not in blobs and len(blobs) == 2  # the two good config files stay cached


def test_hub_connection_cut_mid_file_is_retried_and_checked(tmp_path: Path, server: HubServer) -> None:
    files = make_files(6)
    server.add_repo(f"{ORG}/toy", files, tags=("0.1.0",))
    server.faults[f"{ORG}/toy/models/model.safetensors"] = "cut-once"
    index = write_index(tmp_path / "index.json", {"toy": entry("toy", files)})
    r = run_cli(["--index", str(index), "download", "toy", "--dir", "out"], tmp_path, server)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out/toy/models/model.safetensors").read_bytes() == files["models/model.safetensors"]
    cdn_gets = [p for m, p in server.requests if m == "GET" and p.startswith("/cdn/")]
    assert len(cdn_gets) == 2, "huggingface_hub retries the cut file once"
    assert not list((tmp_path / "hub-cache").rglob("*.incomplete"))


def test_killed_download_leaves_no_complete_file(tmp_path: Path, server: HubServer) -> None:
    files = make_files(7, weights_size=400_000)
    server.add_repo(f"{ORG}/toy", files, tags=("0.1.0",))
    server.faults[f"{ORG}/toy/models/model.safetensors"] = "stall"
    index = write_index(tmp_path / "index.json", {"toy": entry("toy", files)})
    env = dict(
        os.environ, HF_ENDPOINT=server.endpoint, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0",
        HF_HUB_CACHE=str(tmp_path / "hub-cache"), HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "common.zoo", "--index", str(index), "download", "toy", "--dir", "out"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        assert server.stalled.wait(30), "the download never reached the weights"
        time.sleep(0.3)  # let the client write the first half
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = [p for p in (tmp_path / "hub-cache").rglob("*.incomplete")]
    assert partial and all(p.stat().st_size < len(files["models/model.safetensors"]) for p in partial)
    assert not (tmp_path / "out" / "toy").exists()
    assert all(b.read_bytes() != files["models/model.safetensors"] for b in cache_blobs(tmp_path))


def test_url_source_good_cut_and_mismatch(tmp_path: Path, server: HubServer, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    files = make_files(8)
    for rel, data in files.items():
        server.plain[f"zoo/toy/0.1.0/{rel}"] = data
    sources = {"url": f"{server.endpoint}/files/zoo/toy/0.1.0/"}
    index = write_index(tmp_path / "index.json", {"toy": entry("toy", files, sources=sources)})
    out = tmp_path / "out"
    argv = ["--index", str(index), "download", "toy", "--source", "url", "--dir", str(out)]

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(argv) == 1
    assert "HF_HUB_OFFLINE=1 forbids the network" in one_error_line(capsys.readouterr().err)
    assert server.requests == [] and not (out / "toy").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    server.faults["zoo/toy/0.1.0/models/model.safetensors"] = "cut"
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "connection cut after 100000 of 200000 bytes" in one_error_line(err)
    assert not (out / "toy").exists() and not list(out.rglob("*.partial"))

    del server.faults["zoo/toy/0.1.0/models/model.safetensors"]
    server.plain["zoo/toy/0.1.0/configs/inference.json"] = b'{"seed": 0}'
    assert cli.main(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "sha256 mismatch" in line and sha(b'{"seed": 0}') in line and "deleted" in line
    assert not (out / "toy").exists() and [p.name for p in out.iterdir()] == []

    server.plain["zoo/toy/0.1.0/configs/inference.json"] = files["configs/inference.json"]
    assert cli.main(argv) == 0
    assert all((out / "toy" / rel).read_bytes() == data for rel, data in files.items())
    assert [p.name for p in out.iterdir()] == ["toy"], "the staging folder must be gone"

    del server.plain["zoo/toy/0.1.0/configs/metadata.json"]
    (out / "toy/configs/metadata.json").unlink()
    assert cli.main(argv) == 1
    assert "HTTP 404" in one_error_line(capsys.readouterr().err)


def test_published_weights_with_unknown_hash_need_the_flag(tmp_path: Path, server: HubServer, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    files = make_files(9)
    ckpt, page = os.urandom(50_000), b"<html>Google Drive - Virus scan warning</html>"
    server.plain["drive/autoencoder.pth"] = ckpt
    server.plain["drive/confirm.html-page"] = page
    published = [
        {"path": "models/paper/autoencoder.pth", "url": f"{server.endpoint}/files/drive/autoencoder.pth",
         "sha256": None, "size": None, "config": "configs/paper.json",
         "hash_type": "md5", "hash_val": hashlib.md5(ckpt).hexdigest()},
    ]
    index = write_index(tmp_path / "index.json", {"toy": entry("toy", files, published_weights=published)})
    out = tmp_path / "out"
    argv = ["--index", str(index), "download", "toy", "--published", "--dir", str(out)]

    assert cli.main(argv) == 1
    assert "--allow-unknown-hash" in one_error_line(capsys.readouterr().err)
    assert not out.exists() and server.requests == []

    assert cli.main([*argv, "--allow-unknown-hash"]) == 0
    stdout = capsys.readouterr().out
    assert f"toy/models/paper/autoencoder.pth: sha256 {sha(ckpt)}" in stdout
    assert (out / "toy/models/paper/autoencoder.pth").read_bytes() == ckpt

    assert cli.main(["--index", str(index), "verify", "toy", "--dir", str(out)]) == 1  # the toy files are missing
    assert f"sha256 {sha(ckpt)} (unknown to the index)" in capsys.readouterr().out
    (out / "toy/models/paper/autoencoder.pth").write_bytes(b"tampered")  # caught by the publisher's md5
    assert cli.main(["--index", str(index), "verify", "toy", "--dir", str(out)]) == 1
    assert "models/paper/autoencoder.pth: differs (published weights)" in capsys.readouterr().out
    assert cli.main([*argv, "--allow-unknown-hash"]) == 1
    assert "differs from the index: pass --force" in one_error_line(capsys.readouterr().err)

    # the publisher's md5 is checked too: a wrong one deletes the file
    published[0]["hash_val"] = hashlib.md5(b"other bytes").hexdigest()
    write_index(tmp_path / "index.json", {"toy": entry("toy", files, published_weights=published)})
    (out / "toy/models/paper/autoencoder.pth").unlink()
    assert cli.main([*argv, "--allow-unknown-hash"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"md5 mismatch (expected {published[0]['hash_val']}, got {hashlib.md5(ckpt).hexdigest()})" in line
    assert not (out / "toy/models/paper/autoencoder.pth").exists() and not list(out.rglob("*.partial"))

    published[0]["url"] = f"{server.endpoint}/files/drive/confirm.html-page"
    published[0]["hash_type"] = published[0]["hash_val"] = None
    published[0]["path"] = "models/paper/diffusion_model.pth"
    write_index(tmp_path / "index.json", {"toy": entry("toy", files, published_weights=published)})
    assert cli.main([*argv, "--allow-unknown-hash"]) == 1
    assert "answered with an HTML page" in one_error_line(capsys.readouterr().err)
    assert not (out / "toy/models/paper/diffusion_model.pth").exists()
    # a failed download into a fresh folder leaves no empty models/paper behind (it read as "downloaded")
    fresh = tmp_path / "fresh"
    assert cli.main(["--index", str(index), "download", "toy", "--published", "--dir", str(fresh),
                     "--allow-unknown-hash"]) == 1
    assert "answered with an HTML page" in one_error_line(capsys.readouterr().err)
    assert not fresh.exists()


def test_list_info_and_name_errors(tmp_path: Path, capsys) -> None:
    files = make_files(10)
    index = write_index(tmp_path / "index.json", {"brain_ldm_3d": entry("brain_ldm_3d", files), "toy": entry("toy", files)})
    assert cli.main(["--index", str(index), "list"]) == 0
    out = capsys.readouterr().out
    assert "brain_ldm_3d" in out and "toy task" in out and "195.4 KB" in out

    assert cli.main(["info", "brain_ldm_3d", "--index", str(index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["files"][0]["sha256"] == sha(files["configs/inference.json"])
    # the GenerativeModels checkpoints appear as published weights, sha256 unknown (None), never invented
    assert [r["url"] for r in info["published_weights"]] == [r["url"] for r in PUBLISHED_WEIGHTS["brain_ldm_3d"]]
    assert all(r["sha256"] is None and "drive.google.com" in r["url"] for r in info["published_weights"])

    assert cli.main(["--index", str(index), "info", "brain_ldm3d"]) == 1
    assert "did you mean brain_ldm_3d?" in one_error_line(capsys.readouterr().err)
    assert cli.main(["--index", str(index), "download", "toy", "--version", "9.9"]) == 1
    assert "version 9.9 is not in the index (it lists 0.1.0)" in one_error_line(capsys.readouterr().err)
    assert cli.main(["--index", str(tmp_path / "nope.json"), "list"]) == 1
    assert "index not found" in one_error_line(capsys.readouterr().err)
    assert cli.main(["--index", str(index), "verify", "--dir", str(tmp_path / "nowhere")]) == 1
    assert "folder not found" in one_error_line(capsys.readouterr().err)


def test_published_table_matches_generative_models_large_files() -> None:
    assert set(PUBLISHED_WEIGHTS) == {"brain_ldm_3d", "cxr_text_ldm"}
    text = large_files_yaml("cxr_text_ldm")
    assert text.count("- path:") == 2 and 'hash_type: "md5"' in text and "1paDN1m-Q_Oy8d_BanPkRTi3RlNB_Sv_h" in text
    assert all(r["sha256"] is None for rows in PUBLISHED_WEIGHTS.values() for r in rows)  # unknown, never invented
    direct = google_drive_direct(PUBLISHED_WEIGHTS["brain_ldm_3d"][0]["url"])
    assert direct == "https://drive.usercontent.google.com/download?id=1CZHwxHJWybOsDavipD0EorDPOo_mzNeX&export=download&confirm=t"
    assert google_drive_direct("https://example.org/a.pt") == "https://example.org/a.pt"


def test_push_bundle_then_download_with_the_zoo_and_with_monai(tmp_path: Path, server: HubServer) -> None:
    from common.zoo.index import write_index as build_and_write_index

    files = make_files(11)
    for rel, data in files.items():
        (tmp_path / "bundles/toy" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "bundles/toy" / rel).write_bytes(data)
    build_and_write_index(tmp_path / "index.json", tmp_path / "bundles")
    env = dict(
        os.environ, HF_ENDPOINT=server.endpoint, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0",
        HF_HUB_CACHE=str(tmp_path / "hub-cache"), HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO),
    )
    push = [sys.executable, str(REPO / "ci/push_bundle.py"), "toy", "--bundles-dir", "bundles", "--index", "index.json"]
    r = subprocess.run(push, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"pushed toy 0.1.0 to {ORG}/toy@" in r.stdout, r.stderr
    repo = server.repos[f"{ORG}/toy"]
    assert repo.commits[repo.tags["0.1.0"]] == {".gitattributes": repo.commits[repo.tags["0.1.0"]][".gitattributes"], **files}

    # MONAI's own bundle download fetches the same repo at the version tag (started now: importing monai is slow)
    monai = [sys.executable, "-m", "monai.bundle", "download", "--name", "toy", "--source", "huggingface_hub",
             "--repo", f"{ORG}/toy", "--version", "0.1.0", "--bundle_dir", "monai_bundles"]
    proc = subprocess.Popen(monai, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        r = subprocess.run(push, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "nothing pushed" in r.stdout
        r = run_cli(["--index", "index.json", "download", "toy", "--dir", "out"], tmp_path, server)
        assert r.returncode == 0, r.stderr
        assert all((tmp_path / "out/toy" / rel).read_bytes() == data for rel, data in files.items())

        # a changed bundle under the same version is refused: a published tag never moves
        (tmp_path / "bundles/toy/configs/inference.json").write_text('{"seed": 12}')
        build_and_write_index(tmp_path / "index.json", tmp_path / "bundles")
        r = subprocess.run(push, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "bump the bundle's version" in one_error_line(r.stderr)
        (tmp_path / "bundles/toy/configs/inference.json").write_text('{"seed": 13}')
        r = subprocess.run([*push, "--dry-run"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "differs from the index" in one_error_line(r.stderr)

        _, monai_err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, monai_err[-2000:]
    assert all((tmp_path / "monai_bundles/toy" / rel).read_bytes() == data for rel, data in files.items())
