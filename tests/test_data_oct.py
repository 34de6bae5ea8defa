"""OCT population: the four classes are told apart by the analyser's class cues."""

import json

import numpy as np

from common.data import oct as octp
from common.data.make import make


def test_oct_classes_recovered():
    cases = [octp.generate(9, i) for i in range(48)]
    assert {c.attributes["class"] for c in cases} == set(octp.CLASSES)
    res = [octp.analyse(c.image) for c in cases]
    acc = np.mean([r["class"] == c.attributes["class"] for r, c in zip(res, cases)])
    assert acc >= 0.9
    by = {k: [r for r, c in zip(res, cases) if c.attributes["class"] == k] for k in octp.CLASSES}
    # the cues point the right way: DME has intraretinal fluid and a thicker retina, CNV the largest RPE lift
    assert np.mean([r["intraretinal_fluid_fraction"] for r in by["DME"]]) > \
        5 * np.mean([r["intraretinal_fluid_fraction"] for r in by["NORMAL"]]) + 0.005
    assert min(r["max_elevation"] for r in by["CNV"]) > max(r["max_elevation"] for r in by["NORMAL"])
    assert octp.analyse(cases[0].image * 0.5 + 0.1)["class"] == res[0]["class"]


def test_make_oct(tmp_path):
    from PIL import Image

    dl = make("oct", 4, tmp_path / "o", seed=0, progress=False)
    d = json.loads(dl.read_text())
    entries = d["training"] + d["validation"] + d["test"]
    for e in entries:
        assert e["label"] == octp.CLASSES.index(e["class"])
        im = np.asarray(Image.open(dl.parent / e["image"]))
        assert im.shape == (128, 128) and im.dtype == np.uint8
        # vitreous (top) dark, retina bright somewhere below
        assert im[:10].mean() < im.max(0).mean()
