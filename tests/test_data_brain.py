"""Brain population: anatomy, covariates, analysers, inverse deformation, written files (2 mm only: fast)."""

import numpy as np
import pytest

from common.data import brain
from common.data.make import make

N_SUBJECTS = 20


@pytest.fixture(scope="module")
def subjects():
    return [brain.generate_subject(11, i) for i in range(N_SUBJECTS)]


def test_subject_arrays_and_covariates(subjects):
    s = subjects[0]
    assert s.t1.shape == s.flair.shape == s.seg.shape == (80, 112, 80)
    assert s.t1.dtype == np.float32 and 0.0 <= s.t1.min() and s.t1.max() <= 1.0
    assert set(np.unique(s.seg)) <= {0, 1, 2, 3, 4}
    np.testing.assert_allclose(np.diag(s.affine)[:3], [2.0, 2.0, 2.0])
    for sub in subjects:
        c = sub.covariates
        assert c["gender"] in (0.0, 1.0)
        for k in ("age", "ventricular_vol", "brain_vol"):
            assert 0.0 <= c[k] <= 1.0
        # ventricles big enough to measure at 2 mm: several hundred voxels
        assert c["ventricular_vol_ml"] / 0.008 > 300


def test_age_drives_ventricles_and_sex_drives_size(subjects):
    age = np.array([s.covariates["age_years"] for s in subjects])
    vent = np.array([s.covariates["ventricular_vol_ml"] for s in subjects])
    assert np.corrcoef(age, vent)[0, 1] > 0.7
    assert vent.max() / vent.min() > 2.0
    # same age band, men's brains larger than women's (head scale)
    brain_ml = np.array([s.covariates["brain_vol_ml"] / (1 - 0.004 * (s.covariates["age_years"] - 45))
                         for s in subjects])
    sex = np.array([s.covariates["gender"] for s in subjects])
    assert brain_ml[sex == 1].mean() > brain_ml[sex == 0].mean()


def test_analyser_recovers_volumes(subjects):
    rec_v = np.array([s.covariates["ventricular_vol_ml"] for s in subjects])
    rec_b = np.array([s.covariates["brain_vol_ml"] for s in subjects])
    meas = [brain.analyse_volumes(s.t1, (2.0, 2.0, 2.0)) for s in subjects]
    mv = np.array([m["ventricular_vol_ml"] for m in meas])
    mb = np.array([m["brain_vol_ml"] for m in meas])
    assert np.corrcoef(rec_v, mv)[0, 1] >= 0.95
    assert np.corrcoef(rec_b, mb)[0, 1] >= 0.95
    assert np.all(np.abs(mb - rec_b) / rec_b < 0.1)
    assert all(m["method"] == "template" for m in meas)
    # calibrated onto the recorded scale: normalised covariates comparable with what a bundle asks for
    for sub in subjects[:5]:
        n = brain.analyse_covariates(sub.t1, (2.0, 2.0, 2.0))
        assert abs(n["ventricular_vol"] - sub.covariates["ventricular_vol"]) < 0.1
        assert abs(n["brain_vol"] - sub.covariates["brain_vol"]) < 0.15
    # robust to intensity scaling (model samples live in other ranges)
    m2 = brain.analyse_volumes(subjects[0].t1 * 0.55, (2.0, 2.0, 2.0))
    assert m2["ventricular_vol_ml"] == pytest.approx(meas[0]["ventricular_vol_ml"], rel=0.02)
    assert m2["brain_vol_ml"] == pytest.approx(meas[0]["brain_vol_ml"], rel=0.02)


def test_grid_free_fallback_orders_ventricles(subjects):
    by_age = sorted(subjects, key=lambda s: s.covariates["ventricular_vol_ml"])
    small, large = by_age[0], by_age[-1]
    ms, ml = (brain.analyse_volumes(s.t1[2:-2], (2.0, 2.0, 2.0)) for s in (small, large))
    assert ms["method"] == ml["method"] == "components"
    assert ml["ventricular_vol_ml"] > 1.5 * ms["ventricular_vol_ml"] > 0


def test_normalisation_round_trip():
    raw = {"gender": 1.0, "age_years": 60.0, "ventricular_vol_ml": 40.0, "brain_vol_ml": 1400.0}
    n = brain.normalise_covariates(raw)
    assert n["gender"] == 1.0 and all(0 < n[k] < 1 for k in ("age", "ventricular_vol", "brain_vol"))
    back = brain.denormalise_covariates(n)
    for k in ("age_years", "ventricular_vol_ml", "brain_vol_ml"):
        assert back[k] == pytest.approx(raw[k])


def test_t1_matches_template_anatomy_after_inverse_deformation():
    s = brain.generate_subject(3, 5, keep_atlas=True)
    ref = brain.synthesise(s.atlas_tissue, brain.T1_LEVELS)  # same anatomy (atrophy, lesions), template space
    back = brain.warp(s.t1[None], brain.invert_grid(s.grid, iterations=10))[0]
    m = ref > 0.05
    corr_back = np.corrcoef(back[m], ref[m])[0, 1]
    corr_raw = np.corrcoef(s.t1[m], ref[m])[0, 1]
    assert corr_back > 0.95
    assert corr_back > corr_raw + 0.05


def test_flair_contrast(subjects):
    s = subjects[1]
    csf, gm, wm = (s.seg == 1), (s.seg == 2), (s.seg == 3)
    assert s.flair[csf].mean() < s.flair[wm].mean() < s.flair[gm].mean()  # CSF dark, grey brighter than white
    assert s.t1[csf].mean() < s.t1[gm].mean() < s.t1[wm].mean()
    with_lesions = [x for x in subjects if (x.seg == 4).sum() > 5]
    assert with_lesions, "older subjects carry white-matter lesions"
    x = with_lesions[0]
    assert x.flair[x.seg == 4].mean() > x.flair[x.seg == 3].mean() + 0.1  # lesions bright on FLAIR


def test_written_volumes_load_with_affine_and_spacing(tmp_path):
    import nibabel as nib

    dl = make("brain", 2, tmp_path / "b3", seed=4, dims=3, spacing=2, progress=False)
    import json

    d = json.loads(dl.read_text())
    e = d["training"][0]
    assert set(e) >= {"image", "flair", "image_lowres", "seg", "gender", "age", "ventricular_vol", "brain_vol",
                      "age_years", "ventricular_vol_ml", "brain_vol_ml", "subject"}
    img = nib.load(dl.parent / e["image"])
    assert img.shape == (80, 112, 80)
    np.testing.assert_allclose(img.header.get_zooms(), (2.0, 2.0, 2.0))
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    expected = brain.load_template(2).affine
    np.testing.assert_allclose(img.affine, expected)
    low = nib.load(dl.parent / e["image_lowres"])
    assert low.shape == (40, 56, 40)
    np.testing.assert_allclose(low.header.get_zooms(), (4.0, 4.0, 4.0))
    # the low-res grid covers the same field of view: voxel (0,0,0) sits at the centre of a 2x2x2 block
    np.testing.assert_allclose(low.affine[:3, 3], expected[:3, 3] + 1.0)
    t1 = np.asarray(img.dataobj)
    np.testing.assert_allclose(np.asarray(low.dataobj)[3, 4, 5], t1[6:8, 8:10, 10:12].mean(), rtol=1e-5)
    seg = np.asarray(nib.load(dl.parent / e["seg"]).dataobj)
    assert seg.dtype == np.uint8
    # the written T1 gives the same measurement as the recorded covariate
    m = brain.analyse_volumes(np.asarray(img.dataobj), img.header.get_zooms())
    assert m["ventricular_vol_ml"] == pytest.approx(e["ventricular_vol_ml"], rel=0.2)
    assert m["brain_vol_ml"] == pytest.approx(e["brain_vol_ml"], rel=0.1)


def test_brain_2d_slices(tmp_path):
    import nibabel as nib

    dl = make("brain", 3, tmp_path / "b2", seed=2, dims=2, spacing=2, progress=False)
    import json

    d = json.loads(dl.read_text())
    entries = d["training"] + d["validation"] + d["test"]
    assert len(entries) == 3 and "image_lowres" not in entries[0]
    img = nib.load(dl.parent / entries[0]["image"])
    assert img.shape == (80, 112)
    np.testing.assert_allclose(img.header.get_zooms()[:2], (2.0, 2.0))
    zs = [brain.SLICE_Z_MM[0] - 2 <= nib.load(dl.parent / e["image"]).affine[2, 3] <= brain.SLICE_Z_MM[1] + 2
          for e in entries]
    assert all(zs)
    rec, meas = [], []
    for i in range(N_SUBJECTS):
        s = brain.generate_subject(5, i, dims=2, spacing=2)
        rec.append(s.covariates["ventricular_vol_ml"])
        meas.append(brain.analyse_volumes(s.t1, (2.0, 2.0))["ventricular_vol_ml"])
    assert np.corrcoef(rec, meas)[0, 1] >= 0.9


def test_noise_free_subject_differs_only_by_its_scanner_noise(subjects):
    """generate_subject(noise=False) is the same subject (same draws: anatomy, covariates, labels, bias, levels)
    without the noise inside the head: the truth a super-resolution headroom is measured against
    (ci/bench_sr_cascade.py headroom)."""
    noisy, clean = subjects[0], brain.generate_subject(11, 0, noise=False)
    assert clean.covariates == noisy.covariates
    np.testing.assert_array_equal(clean.seg, noisy.seg)
    diff = (noisy.t1 - clean.t1)[(noisy.t1 > 0) & (noisy.t1 < 1)]  # the clip at 0 and 1 bends the noise
    assert abs(float(diff.mean())) < 5e-4 and abs(float(diff.std()) - brain.NOISE_SD) < 1e-3
    differ = noisy.t1 != clean.t1
    assert 0.1 < differ.mean() < 0.6 and (clean.t1[differ] > 0).all()  # the noise is inside the head only
