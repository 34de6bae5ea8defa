"""EvaluationRunner / CLI end to end on tiny PNG and NIfTI sets: report contents, pairing, RAS reorientation,
and bad inputs that must fail with one line and write nothing."""

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from common.evaluation import EvaluationError, EvaluationRunner
from common.evaluation.__main__ import main


def _blobs(shape, seed):
    rng = np.random.default_rng(seed)
    low = rng.random(tuple(max(2, s // 8) for s in shape))
    from scipy.ndimage import zoom

    img = zoom(low, [s / l for s, l in zip(shape, low.shape)], order=3)
    return np.clip((img - img.min()) / (img.max() - img.min()), 0, 1)


def _datalist(folder, names, split="test"):
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": [], split: [{"image": n} for n in names]}))
    return path


def _png_sets(tmp_path, n=3, size=32, noise=0.02):
    real_dir, sample_dir = tmp_path / "data", tmp_path / "samples"
    real_dir.mkdir(), sample_dir.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        img = _blobs((size, size), i)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(real_dir / f"case{i}.png")
        noisy = np.clip(img + noise * rng.standard_normal(img.shape), 0, 1)
        Image.fromarray((noisy * 255).round().astype(np.uint8)).save(sample_dir / f"case{i}.png")
        names.append(f"case{i}.png")
    return sample_dir, _datalist(real_dir, names)


def test_png_report_has_every_metric_with_provenance(tmp_path, capsys):
    samples, datalist = _png_sets(tmp_path)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"in": [1, 2, 3], "out": [2.5, 4]}))
    out = tmp_path / "eval" / "report.json"
    report = EvaluationRunner(
        str(samples), str(datalist), str(out), metrics=["fid", "ms_ssim_diversity", "mmd", "psnr", "mae", "ms_ssim_reconstruction", "auc"],
        ood_scores=str(scores), progress=False, name="tiny",
    ).run()
    on_disk = json.loads(out.read_text())
    assert on_disk["results"] == report["results"] and on_disk["split"] == "test" and on_disk["n_samples"] == 3
    r = {x["metric"]: x for x in report["results"]}
    assert r["fid"]["extractor"] == "inception" and r["fid"]["method"] == "2d" and r["fid"]["value"] >= 0
    assert r["fid"]["n"] == {"samples": 3, "reals": 3}
    assert r["ms_ssim_diversity"]["n"] == 3 and r["ms_ssim_diversity"]["settings"]["kernel_size"] == 7
    assert r["psnr"]["method"] == "samples vs reals, paired by file stem" and 25 < r["psnr"]["value"] < 45
    assert 0 < r["mae"]["value"] < 0.05 and 0.8 < r["ms_ssim_reconstruction"]["value"] <= 1.0
    assert r["auc"]["value"] == pytest.approx(5 / 6)
    table = capsys.readouterr().out
    assert "metric" in table and "inception" in table and "report written" in table


def test_nifti_ras_reorientation_autoencoder_and_resampling(tmp_path):
    real_dir, sample_dir = tmp_path / "data", tmp_path / "samples"
    real_dir.mkdir(), sample_dir.mkdir()
    names = []
    for i in range(3):
        vol = _blobs((24, 24, 24), i).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 1.0, 1.0])), real_dir / f"s{i}.nii.gz")  # LPS storage
        nib.save(nib.Nifti1Image(vol[::-1, ::-1].copy(), np.eye(4)), sample_dir / f"s{i}.nii.gz")  # same image, RAS
        names.append(f"s{i}.nii.gz")
    datalist = _datalist(real_dir, names, split="validation")  # no test split: falls back to validation
    rep = EvaluationRunner(str(sample_dir), str(datalist), str(tmp_path / "r.json"),
                           metrics=["mae", "ms_ssim_diversity", "mmd"], progress=False).run()
    r = {x["metric"]: x for x in rep["results"]}
    assert rep["split"] == "validation" and r["mae"]["value"] == pytest.approx(0.0, abs=1e-7)
    assert r["ms_ssim_diversity"]["settings"]["scales"] == 2 and 0 <= r["ms_ssim_diversity"]["value"] < 1
    # identical sets: the unbiased estimate is 2 S_off / (m^2 (m-1)) - 2 S_diag / m^2 <= 0 (Cauchy-Schwarz)
    assert r["mmd"]["value"] <= 0 and r["mmd"]["n"] == 3
    from monai.networks.layers import GaussianFilter

    rep = EvaluationRunner(str(sample_dir), str(datalist), str(tmp_path / "r2.json"), metrics=["ms_ssim_reconstruction", "psnr"],
                           autoencoder=GaussianFilter(3, 1.0), spatial_size=[16, 16, 16], progress=False).run()
    r = {x["metric"]: x for x in rep["results"]}
    assert r["psnr"]["method"] == "autoencoder reconstruction of reals" and rep["image_shape"]["reals"] == [1, 16, 16, 16]
    assert 0.3 < r["ms_ssim_reconstruction"]["value"] < 1.0 and 15 < r["psnr"]["value"] < 60


@pytest.mark.parametrize("case, message", [
    ("empty", "holds no"),
    ("unreadable", "cannot read"),
    ("dims", "cannot be compared"),
    ("few", "FID needs at least 2"),
    ("mmd_size", "set spatial_size"),
])
def test_bad_inputs_fail_in_one_line_and_write_nothing(tmp_path, case, message):
    samples, datalist = _png_sets(tmp_path, n=2)
    metrics = ["fid"]
    if case == "empty":
        for p in samples.iterdir():
            p.unlink()
    elif case == "unreadable":
        (samples / "case0.png").write_bytes(b"not a png")
    elif case == "dims":
        for p in samples.iterdir():
            p.unlink()
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), samples / "v.nii.gz")
    elif case == "few":
        (samples / "case1.png").unlink()
    elif case == "mmd_size":
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(samples / "case0.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(samples / "case1.png")
        metrics = ["mmd"]
    out = tmp_path / "eval" / "report.json"
    with pytest.raises(EvaluationError, match=message) as err:
        EvaluationRunner(str(samples), str(datalist), str(out), metrics=metrics, progress=False).run()
    assert "\n" not in str(err.value)
    assert not out.exists() and not (tmp_path / "eval").exists()


def test_cli_exit_code_and_one_line_error(tmp_path, capsys):
    samples, datalist = _png_sets(tmp_path, n=2)
    rc = main(["--samples_dir", str(samples), "--datalist", str(tmp_path / "missing.json"), "--output", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: datalist") and "\n" not in err and not (tmp_path / "r.json").exists()
    with pytest.raises(EvaluationError, match="unknown metrics"):
        EvaluationRunner(str(samples), str(datalist), str(tmp_path / "r.json"), metrics=["ssim"])
