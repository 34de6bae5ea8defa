"""Mammography population: density level drawn is measured back from the image."""

import json

import numpy as np

from common.data import mammo
from common.data.make import make


def test_density_levels_recovered():
    cases = [mammo.generate(5, i) for i in range(45)]
    assert {c.attributes["masking"] for c in cases} == set(mammo.MASKING)
    for c in cases:
        lo, hi = mammo.DENSITY_RANGES[c.attributes["masking"]]
        assert lo - 0.03 <= c.attributes["density"] <= hi + 0.03
        assert c.attributes["label"] == mammo.MASKING.index(c.attributes["masking"])
    res = [mammo.analyse(c.image) for c in cases]
    acc = np.mean([r["masking"] == c.attributes["masking"] for r, c in zip(res, cases)])
    assert acc >= 0.95
    rec = [c.attributes["density"] for c in cases]
    assert np.corrcoef(rec, [r["density"] for r in res])[0, 1] > 0.95
    # intensity scaling does not change the level
    assert mammo.analyse(cases[0].image * 0.7 + 0.05)["masking"] == res[0]["masking"]


def test_make_mammo(tmp_path):
    from PIL import Image

    dl = make("mammo", 3, tmp_path / "m", seed=0, size="96x80", progress=False)
    d = json.loads(dl.read_text())
    e = d["training"][0]
    assert set(e) >= {"image", "masking", "label", "density"}
    im = np.asarray(Image.open(dl.parent / e["image"]))
    assert im.shape == (96, 80) and im.dtype == np.uint8
    from monai.transforms import LoadImage  # the case's array is the file as LoadImage reads it: [W, H]

    ref = mammo.generate(0, 0, (96, 80)).image
    loaded = np.asarray(LoadImage(image_only=True)(str(dl.parent / d["training"][0]["image"])))
    assert ref.shape == loaded.shape == (80, 96)
    np.testing.assert_allclose(loaded / 255.0, ref, atol=0.5 / 255 + 1e-6)
    # breast brighter than background, background near black
    assert im[:, -3:].mean() < 20 and im[:, :10].mean() > 40
