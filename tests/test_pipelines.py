"""Pipelines (pipelines/*.json run by `python -m monai.bundle run`): the synthetic cohort and the chest X-ray
quality control end to end on tiny inputs with the shipped weights, provenance, skip on rerun, --force, one-line
errors that keep the finished steps, and `python -m common.zoo download --pipeline` against a local hub."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _run(pipeline: str, **overrides):
    from monai.bundle import run

    cwd = os.getcwd()
    os.chdir(REPO)  # bundle_dirs default: ./bundles, as a user runs it from the repository
    try:
        return run(config_file=str(PIPELINES / f"{pipeline}.json"), logging_file=None, **overrides)
    finally:
        os.chdir(cwd)


def _chain(exc: BaseException) -> list[str]:
    out, e = [], exc
    while e is not None:
        out.append(str(e))
        e = e.__cause__
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def brain_reals(tmp_path_factory):
    from common.data.make import make

    return make("brain", 20, tmp_path_factory.mktemp("brain") / "data", seed=3, dims=3, progress=False)


def _conditions(path: Path, rows: list[tuple]) -> Path:
    path.write_text("gender,age,ventricular_vol,brain_vol\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _cohort(tmp_path: Path, brain_reals: Path, conditions: Path, **kw):
    return _run("synthetic_cohort", conditions=str(conditions), output_dir=str(tmp_path / "out"),
                real_datalist=str(brain_reals), num_inference_steps=2, metrics=["ms_ssim_diversity"], **kw)


def test_synthetic_cohort_datalist_report_provenance_and_skip(tmp_path, brain_reals, capfd):
    import nibabel as nib

    from common.training import load_datalist

    conditions = _conditions(tmp_path / "c.csv", [(1, 0.8, 0.7, 0.3), (0, 0.2, 0.3, 0.6)])
    _cohort(tmp_path, brain_reals, conditions)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["datalist", "evaluate", "provenance.json", "sample"]
    # the datalist carries the requested covariates and loads as a training datalist
    entries = load_datalist(str(out / "datalist" / "datalist.json"), "training")
    assert [(e["gender"], e["age"], e["ventricular_vol"], e["brain_vol"]) for e in entries] == [
        (1.0, 0.8, 0.7, 0.3), (0.0, 0.2, 0.3, 0.6)]
    assert all(nib.load(e["image"]).shape == (80, 112, 80) for e in entries)
    report = json.loads((out / "evaluate" / "report.json").read_text())
    assert "ms_ssim_diversity" in json.dumps(report)
    # provenance: bundle, version, weights sha256, seeds, outputs, wall time
    prov = json.loads((out / "provenance.json").read_text())
    sample = prov["steps"][0]
    assert sample["name"] == "sample" and sample["bundle"] == "brain_ldm_3d" and sample["status"] == "complete"
    meta = json.loads((REPO / "bundles/brain_ldm_3d/configs/metadata.json").read_text())
    assert sample["version"] == meta["version"]
    assert sample["weights_sha256"]["diffusion_model.safetensors"] == _sha(
        REPO / "bundles/brain_ldm_3d/models/diffusion_model.safetensors")
    assert [i["overrides"]["seed"] for i in sample["items"]] == [0, 1]
    assert sample["outputs"] == {p.name: _sha(p) for p in (out / "sample").iterdir()}
    assert all(s["wall_seconds"] > 0 for s in prov["steps"] if s["kind"] == "bundle")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # a rerun with the same inputs skips every step; the files are untouched
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    capfd.readouterr()
    _cohort(tmp_path, brain_reals, conditions)
    printed = capfd.readouterr().out
    assert printed.count("up to date, skipped") == 3, printed
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")} == mtimes
    # a changed condition reruns the steps that depend on it; --force reruns everything
    _conditions(conditions, [(1, 0.8, 0.7, 0.3), (0, 0.2, 0.3, 0.7)])
    _cohort(tmp_path, brain_reals, conditions)
    assert capfd.readouterr().out.count("up to date, skipped") == 0
    assert sorted(p.name for p in (out / "sample").iterdir())[0].startswith("sample_g0.0_a0.2_v0.3_b0.7")
    _cohort(tmp_path, brain_reals, conditions, force=True)
    assert capfd.readouterr().out.count("up to date, skipped") == 0


def test_a_failing_step_is_one_line_and_keeps_the_finished_steps(tmp_path, brain_reals):
    conditions = _conditions(tmp_path / "c.csv", [(1, 0.5, 0.5, 0.5)])
    with pytest.raises(Exception) as err:  # one sample: MS-SSIM diversity needs two -> the evaluate step fails
        _cohort(tmp_path, brain_reals, conditions)
    hit = [m for m in _chain(err.value) if m.startswith("step 'evaluate'")]
    assert hit and "\n" not in hit[0] and "a rerun skips them" in hit[0], _chain(err.value)
    out = tmp_path / "out"
    prov = json.loads((out / "provenance.json").read_text())
    assert [s["name"] for s in prov["steps"]] == ["sample", "datalist"]
    assert all(s["status"] == "complete" for s in prov["steps"])
    assert sorted(p.name for p in out.iterdir()) == ["datalist", "provenance.json", "sample"]  # no half-written step


@pytest.mark.parametrize("case, message", [
    ("missing_conditions", "conditions file"),
    ("bad_value", "is outside [0, 1]: normalise it"),
    ("unknown_bundle", "bundle 'no_such_bundle' is not in bundles: fetch it with `python -m common.zoo download no_such_bundle`"),
])
def test_bad_pipeline_input_is_one_line_and_writes_nothing(tmp_path, brain_reals, case, message):
    conditions = _conditions(tmp_path / "c.csv", [(1, 0.5, 1.5 if case == "bad_value" else 0.5, 0.5)])
    if case == "missing_conditions":
        conditions = tmp_path / "none.csv"
    extra = {}
    if case == "unknown_bundle":
        steps = json.loads((PIPELINES / "synthetic_cohort.json").read_text())["steps"]
        steps[2]["bundle"] = "no_such_bundle"
        extra["steps"] = steps
    with pytest.raises(Exception) as err:
        _cohort(tmp_path, brain_reals, conditions, **extra)
    hit = [m for m in _chain(err.value) if message in m]
    assert hit and "\n" not in hit[0], _chain(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cxr_quality_control_flags_against_real_images(tmp_path):
    from common.data.make import make

    reals = make("cxr", 30, tmp_path / "cxr", seed=4, progress=False)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Large right pleural effusion.\n\nNo acute cardiopulmonary process.\n")
    _run("cxr_qc", prompts_file=str(prompts), output_dir=str(tmp_path / "out"), real_datalist=str(reals),
         samples_per_prompt=1, num_inference_steps=2, quantile=0.5)
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "flag" / "qc.csv").open()))
    assert sorted(r["prompt"] for r in rows) == ["Large right pleural effusion.", "No acute cardiopulmonary process."]
    real = [float(r["log_likelihood_sum"]) for r in csv.DictReader((out / "score_real" / "likelihoods.csv").open())]
    assert len(real) == 3  # the test split of 30 cases
    threshold = float(np.quantile(real, 0.5))
    for r in rows:
        assert float(r["threshold"]) == pytest.approx(threshold, abs=1e-3)
        assert r["flagged"] == str(float(r["log_likelihood_sum"]) < threshold).lower()
    prov = json.loads((out / "provenance.json").read_text())
    assert [s["name"] for s in prov["steps"]] == ["sample", "score_samples", "score_real", "flag"]
    assert prov["steps"][1]["upstream"]["sample"] == prov["steps"][0]["fingerprint"]


def test_download_pipeline_fetches_its_bundles(tmp_path):
    from hub_server import HubServer

    from common.pipelines import pipeline_bundles

    needed = pipeline_bundles(PIPELINES / "cxr_qc.json")
    assert needed == ["cxr_text_ldm", "cxr_vqvae_transformer"]
    bundles = {}
    with HubServer() as server:
        for i, name in enumerate(needed):
            files = {"configs/metadata.json": json.dumps({"version": "0.1.0", "name": name}).encode(),
                     "models/w.safetensors": bytes([i]) * 1000}
            server.add_repo(f"monai-generative-zoo/{name}", files, tags=("0.1.0",))
            bundles[name] = {"name": name, "version": "0.1.0", "task": "t", "description": "d", "depends_on": [],
                             "files": [{"path": p, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                                       for p, b in sorted(files.items())],
                             "sources": {}, "published_weights": []}
        index = tmp_path / "index.json"
        index.write_text(json.dumps({"index_version": 1, "bundles": bundles}))
        env = dict(os.environ, HF_ENDPOINT=server.endpoint, HF_HUB_OFFLINE="0", HF_HUB_CACHE=str(tmp_path / "cache"),
                   HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO))
        r = subprocess.run([sys.executable, "-m", "common.zoo", "--index", str(index), "download", "--pipeline",
                            str(PIPELINES / "cxr_qc.json"), "--dir", "out"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "pipeline" in r.stdout and all((tmp_path / "out" / n / "models/w.safetensors").is_file() for n in needed)
    bad = subprocess.run([sys.executable, "-m", "common.zoo", "download", "--pipeline", "no_such_pipeline"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("error: pipeline") and "\n" not in bad.stderr.strip()


def test_flair_to_hr_t1_translates_then_upscales_with_the_finer_affine(tmp_path, brain_reals, capfd):
    """Two FLAIR crops (2 mm) -> flair2t1_controlnet -> brain_sr_cascade's upscaler: 2 mm T1 on each FLAIR's grid, then
    the 1 mm T1 with the finer affine whose 2x2x2 block means are the 2 mm T1; provenance of both; a rerun skips."""
    import nibabel as nib
    import numpy as np

    from common.sampling.upscale import half_spacing_affine

    entries = json.loads(brain_reals.read_text())["test"][:2]
    inputs = tmp_path / "flair"
    inputs.mkdir()
    for i, e in enumerate(entries):
        src = nib.load(str(brain_reals.parent / e["flair"]))
        crop = np.asarray(src.dataobj, dtype=np.float32)[20:60, 28:84, 30:50]
        affine = src.affine.copy()
        affine[:3, 3] = src.affine[:3, :3] @ np.array([20, 28, 30]) + src.affine[:3, 3]
        nib.save(nib.Nifti1Image(crop, affine), str(inputs / f"case{i}.nii.gz"))
    out = tmp_path / "out"
    kw = dict(input_dir=str(inputs), output_dir=str(out), translation_steps=2, upscaling_steps=2)
    _run("flair_to_hr_t1", **kw)
    assert sorted(p.name for p in out.iterdir()) == ["provenance.json", "t1", "t1_1mm"]
    for i in range(2):
        flair = nib.load(str(inputs / f"case{i}.nii.gz"))
        t1 = nib.load(str(out / "t1" / f"case{i}.nii.gz"))
        high = nib.load(str(out / "t1_1mm" / f"case{i}.nii.gz"))
        assert t1.shape == (40, 56, 20) and high.shape == (80, 112, 40)
        np.testing.assert_allclose(t1.affine, flair.affine, atol=1e-5)
        np.testing.assert_allclose(high.affine, half_spacing_affine(flair.affine), atol=1e-5)
        low, up = t1.get_fdata(), high.get_fdata()
        blocks = up.reshape(40, 2, 56, 2, 20, 2)
        whole = ((blocks > 0) & (blocks < 1)).all(axis=(1, 3, 5))
        assert whole.mean() > 0.5 and np.abs(blocks.mean(axis=(1, 3, 5)) - low)[whole].max() < 1e-4
    prov = json.loads((out / "provenance.json").read_text())
    assert [(s["name"], s["bundle"], s["status"]) for s in prov["steps"]] == [
        ("t1", "flair2t1_controlnet", "complete"), ("t1_1mm", "brain_sr_cascade", "complete")]
    assert prov["steps"][1]["weights_sha256"]["diffusion_model.safetensors"] == _sha(
        REPO / "bundles/brain_sr_cascade/models/diffusion_model.safetensors")
    capfd.readouterr()
    _run("flair_to_hr_t1", **kw)
    assert capfd.readouterr().out.count("up to date, skipped") == 2
