"""The class-conditioned 2D LDM bundles (oct_ldm, mammo_ldm): one set of configs on the shared core, differing in
data, sizes and class names. A tiny two-stage train per bundle (8 built-in images, one epoch per stage), inference
per class (PNG of the promised size, the class in the file name, same seed same bytes), the class embedding
changing the output, and bad input failing in one line with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
# bundle -> (population, tiny make size H x W, image_size as loaded [W, H], class names)
BUNDLES = {
    "oct_ldm": ("oct", "64x64", [64, 64], ["cnv", "dme", "drusen", "normal"]),
    "mammo_ldm": ("mammo", "80x64", [64, 80], ["low", "medium", "high"]),
}
TINY_NETS = {"autoencoder_def#channels": [8, 16, 16], "autoencoder_def#norm_num_groups": 8,
             "diffusion_def#channels": [16, 16, 32], "diffusion_def#num_head_channels": [0, 16, 16],
             "diffusion_def#norm_num_groups": 8}
TINY_DISC = {"discriminator_def#num_layers_d": 1, "discriminator_def#channels": 8}


def _run(bundle: str, config: str, run_id: str = "run", **overrides):
    from monai.bundle import run

    configs = REPO / "bundles" / bundle / "configs"
    files = [str(configs / "inference.json")] + ([str(configs / config)] if config != "inference.json" else [])
    return run(run_id, config_file=files, meta_file=str(configs / "metadata.json"), logging_file=None,
               bundle_root=str(REPO / "bundles" / bundle), **overrides)


@pytest.fixture(scope="module", params=sorted(BUNDLES))
def tiny(request, tmp_path_factory):
    """(bundle, folder): both stages trained for one epoch on 8 tiny built-in images."""
    from common.data.make import make

    bundle = request.param
    population, size, image_size, _ = BUNDLES[bundle]
    root = tmp_path_factory.mktemp(bundle)
    datalist = make(population, 10, root / "data", seed=1, size=size, progress=False)
    common = {"datalist": str(datalist), "output_dir": str(root / "runs"), "num_threads": 1, "image_size": image_size,
              **TINY_NETS, **TINY_DISC}
    _run(bundle, "train.json", "train_autoencoder", **common, **{
        "autoencoder_train#batch_size": 4, "autoencoder_train#max_epochs": 1,
        "autoencoder_train#adversarial_warmup_iterations": 1})
    _run(bundle, "train.json", "train_diffusion", **common, **{
        "diffusion_train#batch_size": 4, "diffusion_train#max_epochs": 1})
    return bundle, root


def _infer(bundle: str, root: Path, out: Path, **kw) -> list[Path]:
    args = {"model_dir": str(root / "runs" / "models"), "output_dir": str(out), "num_inference_steps": 3,
            "progress": False, "image_size": BUNDLES[bundle][2], **TINY_NETS, **kw}
    _run(bundle, "inference.json", **args)
    return sorted(out.iterdir())


def test_bundles_verify_and_share_one_structure():
    from common.zoo.verify import verify_bundle

    configs = {}
    for bundle in BUNDLES:
        failures = [f for f in verify_bundle(REPO / "bundles" / bundle) if f.rule not in ("index-file", "index-stale")]
        assert failures == [], "\n".join(map(str, failures))
        configs[bundle] = json.loads((REPO / "bundles" / bundle / "configs" / "inference.json").read_text())
    # the two bundles differ only in data, sizes and class names
    differing = {k for k in configs["oct_ldm"] if configs["oct_ldm"][k] != configs["mammo_ldm"].get(k)}
    # and the default guidance, chosen per bundle from its measured guidance sweep (model card)
    assert differing <= {"class_names", "class", "output_prefix", "image_size", "batch_size", "guidance_scale"}, differing


def test_tiny_training_writes_weights_with_the_class_metadata(tiny):
    from common.weights import read_metadata

    bundle, root = tiny
    meta = read_metadata(root / "runs" / "models" / "diffusion_model.safetensors")
    names = BUNDLES[bundle][3]
    assert meta["class_names"].lower() == ",".join(names) and meta["label_dropout"] == "0.1"
    assert meta["prediction_type"] == "v_prediction" and float(meta["scale_factor"]) > 0
    assert not (REPO / "bundles" / bundle / "runs").exists()


def test_inference_per_class_names_sizes_and_same_seed_same_bytes(tiny, tmp_path):
    bundle, root = tiny
    names = BUNDLES[bundle][3]
    a = _infer(bundle, root, tmp_path / "a", seed=3, guidance_scale=2.0)
    b = _infer(bundle, root, tmp_path / "b", seed=3, guidance_scale=2.0)
    prefix = bundle.split("_")[0]
    assert [f.name for f in a] == sorted(f"{prefix}_{c}_seed3_{i:04d}.png" for i, c in enumerate(names))
    w, h = BUNDLES[bundle][2]
    for f in a:
        img = np.asarray(Image.open(f))
        assert img.shape == (h, w) and img.dtype == np.uint8  # PIL reads rows first
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
    # one class, any case, two samples
    one = _infer(bundle, root, tmp_path / "one", seed=3, num_samples=2, **{"class": names[-1].upper()})
    assert [f.name for f in one] == [f"{prefix}_{names[-1]}_seed3_{i:04d}.png" for i in range(2)]


def test_the_class_changes_the_sample(tiny):
    from monai.bundle import ConfigParser

    bundle, root = tiny
    configs = REPO / "bundles" / bundle / "configs"
    p = ConfigParser()
    p.read_config(str(configs / "inference.json"))
    p.update({"bundle_root": str(REPO / "bundles" / bundle), "model_dir": str(root / "runs" / "models"),
              "image_size": BUNDLES[bundle][2], "device": "cpu", **TINY_NETS})
    sampler, conditioner = p.get_parsed_content("sampler"), p.get_parsed_content("conditioner")
    names = BUNDLES[bundle][3]
    noise = sampler.noise(1, torch.Generator().manual_seed(0))
    out = [sampler.sample(conditioner.from_values(1, classes=c), None, 1, noise=noise, num_inference_steps=2,
                          progress=False) for c in (names[0], names[-1])]
    assert (out[0] - out[1]).abs().max() > 1e-4


@pytest.mark.parametrize("override, message", [
    ({"class": "amd"}, "unknown class 'amd': use --class with one of"),
    ({"guidance_scale": -1}, "guidance_scale must be a finite number in [0, 50]"),
    ({"num_inference_steps": 2.5}, "num_inference_steps must be an integer, got 2.5"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, override, message):
    bundle, root = tiny
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:
        _infer(bundle, root, out, **override)
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    hit = [m for m in chain if message in m]
    assert hit and "\n" not in hit[0], chain
    if "class" in override:
        assert "|".join(BUNDLES[bundle][3]) in hit[0]
    assert not out.exists() or not any(out.rglob("*"))


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_shipped_weights_sample_each_class(bundle, tmp_path):
    """The shipped weights: under 50 MB, their class names and scale factor stored, a PNG per class."""
    from common.weights import read_metadata

    models = REPO / "bundles" / bundle / "models"
    assert 0 < sum(f.stat().st_size for f in models.glob("*.safetensors")) < 50_000_000
    meta = read_metadata(models / "diffusion_model.safetensors")
    assert meta["class_names"].lower() == ",".join(BUNDLES[bundle][3]) and float(meta["scale_factor"]) > 0
    _run(bundle, "inference.json", output_dir=str(tmp_path), num_inference_steps=3, progress=False, seed=1,
         scheduler="dpmpp2m", device="cpu")
    files = sorted(tmp_path.iterdir())
    assert len(files) == len(BUNDLES[bundle][3])
    for f in files:
        img = np.asarray(Image.open(f))
        assert img.shape == tuple(reversed(json.loads((REPO / "bundles" / bundle / "configs" / "inference.json")
                                                      .read_text())["image_size"])) and img.std() > 3
