"""Built-in populations are versioned: same seed, same data, and a datalist made by another generator is refused.

The pinned numbers below are case 0 (and 1) of seed 0. If a pin fails you changed a generator's output: bump its
entry in ``common.data.make.POPULATION_VERSIONS`` (so old datalists are refused) and update the pins here.
"""

import json

import numpy as np
import pytest

from common.data import brain, cxr, mammo, oct
from common.data.make import POPULATION_VERSIONS, check_population_version, make
from common.evaluation.errors import EvaluationError
from common.evaluation.loading import load_reals
from common.training.data import load_datalist

BRAIN_PINS = {  # generate_subject(0, i).covariates, 3D 2 mm
    0: {"gender": 1.0, "age": 0.159231, "ventricular_vol_ml": 29.37167, "brain_vol_ml": 1838.0546},
    1: {"gender": 0.0, "age": 0.223639, "ventricular_vol_ml": 24.571804, "brain_vol_ml": 1430.8021},
}


@pytest.mark.parametrize("index", sorted(BRAIN_PINS))
def test_brain_generator_is_pinned(index):
    s = brain.generate_subject(0, index)
    for key, want in BRAIN_PINS[index].items():
        assert s.covariates[key] == pytest.approx(want, rel=1e-4), (key, "brain generator changed: see module doc")
    if index == 0:
        assert float(s.t1.mean()) == pytest.approx(0.248124, rel=1e-4)


@pytest.mark.parametrize("module, size, mean, attributes", [
    (cxr, (128, 128), 0.562217, {"finding": "pneumothorax", "pneumothorax_side": "right", "ctr": 0.40708}),
    (mammo, (160, 128), 0.111476, {"masking": "medium", "label": 1, "density": 0.434422, "view": "CC",
                                   "laterality": "right"}),
    (oct, (128, 128), 0.229999, {"class": "DME", "label": 1}),
])
def test_2d_generators_are_pinned(module, size, mean, attributes):
    case = module.generate(0, 0, size)
    assert float(np.asarray(case.image, np.float64).mean()) == pytest.approx(mean, rel=1e-4)
    for key, want in attributes.items():
        got = case.attributes[key]
        assert got == (pytest.approx(want, rel=1e-4) if isinstance(want, float) else want), key


def test_datalist_records_the_generator_version(tmp_path):
    path = make("oct", 3, tmp_path / "oct", seed=0, progress=False)
    header = json.loads(path.read_text())["population"]
    assert header["name"] == "oct" and header["version"] == POPULATION_VERSIONS["oct"]
    assert len(load_datalist(str(path), split="training")) == 1


def test_older_generator_version_is_refused(tmp_path):
    path = make("oct", 3, tmp_path / "oct", seed=0, progress=False)
    content = json.loads(path.read_text())
    content["population"]["version"] = POPULATION_VERSIONS["oct"] - 1
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError) as err:
        load_datalist(str(path), split="training")
    msg = str(err.value)
    assert "\n" not in msg and "oct population version 0" in msg
    assert "python -m common.data make oct --n 3 --seed 0 --size 128x128 --out NEW_DIR" in msg
    with pytest.raises(EvaluationError, match="oct population version 0"):  # evaluation reads datalists too
        load_reals(path, split="test")


def test_brain_hint_names_grid_and_own_datalists_pass():
    header = {"population": {"name": "brain", "version": 1, "n": 240, "seed": 0, "dims": 3, "spacing_mm": 2.0}}
    with pytest.raises(ValueError, match=r"make brain --n 240 --seed 0 --dims 3 --spacing 2 --out NEW_DIR"):
        check_population_version(header, "x.json")
    check_population_version({"training": []}, "own.json")  # a user's datalist without a header
    check_population_version({"population": {"name": "my_site", "version": 7}}, "own.json")
