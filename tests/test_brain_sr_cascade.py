"""brain_sr_cascade: a latent diffusion upscaler conditioned on the noised low-resolution volume and its noise level.

A tiny two-stage train on pairs of the built-in population (a T1 and its 2x2x2 block means); upscaling of given
volumes (2x the voxels, the finer grid's affine in the input's orientation, the input's name, consistency with the
input's block means, same seed same bytes, the noise level changing the output); the cascade from brain_ldm_3d's
own sample; a UNet without class embeddings refused in training and sampling; bad inputs in one line with nothing
written; the shipped weights against trilinear interpolation on a subject of another seed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "brain_sr_cascade"
CONFIGS = BUNDLE / "configs"
TINY_NETS = {"autoencoder_def#channels": [8, 8], "autoencoder_def#norm_num_groups": 8,
             "diffusion_def#channels": [8, 8, 16], "diffusion_def#norm_num_groups": 8}
TINY_TRAIN = {"discriminator_def#num_layers_d": 1, "autoencoder_train#patch_size": [16, 16, 16],
              "diffusion_train#latent_patch_size": [8, 8, 8]}


def _run(config: str, run_id: str = "run", **overrides):
    from monai.bundle import run

    files = [str(CONFIGS / "inference.json")] + ([str(CONFIGS / config)] if config != "inference.json" else [])
    return run(run_id, config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=None,
               bundle_root=str(BUNDLE), **overrides)


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    """Three built-in 2 mm subjects, each T1 (80x112x80) with its block-mean copy (40x56x40): the same pairing as
    the 1 mm population the shipped weights trained on, at half the size."""
    from common.data.make import make

    return make("brain", 3, tmp_path_factory.mktemp("brain") / "data", seed=5, dims=3, spacing=2, progress=False)


@pytest.fixture(scope="module")
def tiny(population, tmp_path_factory) -> Path:
    """Both stages trained for a few iterations on two subjects; returns the run folder."""
    runs = tmp_path_factory.mktemp("runs")
    common = {"datalist": str(population), "output_dir": str(runs), "num_threads": 1, **TINY_NETS, **TINY_TRAIN}
    _run("train.json", "train_autoencoder", **common, **{"autoencoder_train#batch_size": 2,
                                                         "autoencoder_train#max_epochs": 2,
                                                         "autoencoder_train#adversarial_warmup_iterations": 1})
    _run("train.json", "train_diffusion", **common, **{"diffusion_train#batch_size": 2,
                                                       "diffusion_train#max_epochs": 3})
    return runs


def _pair(datalist: Path, split: str = "test") -> tuple[Path, Path]:
    entry = json.loads(datalist.read_text())[split][0]
    return datalist.parent / entry["image"], datalist.parent / entry["image_lowres"]


def _upscale(tiny: Path, out: Path, **kw) -> list[Path]:
    args = {"model_dir": str(tiny / "models"), "check_weights": False, "output_dir": str(out),
            "num_inference_steps": 2, "progress": False, "device": "cpu", **TINY_NETS, **kw}
    _run("upscale.json", **args)
    return sorted(p for p in out.iterdir() if p.is_file())


def _write(path: Path, array: np.ndarray, affine=None) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array, dtype=np.float32), np.eye(4) if affine is None else affine),
             str(path))
    return str(path)


def _assert_consistent(high: np.ndarray, low: np.ndarray) -> None:
    """Each 2x2x2 block of ``high`` averages to its ``low`` voxel, wherever the [0, 1] clip after the consistency
    projection left the block whole (the tiny test model's output is far from the truth, so the clip bites often)."""
    blocks = high.reshape(low.shape[0], 2, low.shape[1], 2, low.shape[2], 2)
    whole = ((blocks > 0) & (blocks < 1)).all(axis=(1, 3, 5))
    assert whole.mean() > 0.2, whole.mean()
    assert np.abs(blocks.mean(axis=(1, 3, 5)) - low)[whole].max() < 1e-4


def test_bundle_verifies():
    from common.zoo.verify import verify_bundle

    failures = [f for f in verify_bundle(BUNDLE) if f.rule not in ("index-file", "index-stale")]
    assert failures == [], "\n".join(map(str, failures))


def test_the_unet_middle_attention_is_memory_efficient():
    """MONAI's DiffusionModelUNet always puts self-attention in its middle block; on the 20x28x20 middle of an
    80x112x80 latent the plain attention matrices took 8.4 GB in one forward (measured), torch's fused attention
    1.3 GB with the same outputs (max |diff| 9e-7): the shipped and paper UNets use the fused one."""
    from monai.bundle import ConfigParser

    for overlay in ([], [str(CONFIGS / "paper.json")]):
        p = ConfigParser()
        p.read_config([str(CONFIGS / "inference.json"), *overlay])
        p.update({"bundle_root": str(BUNDLE), "diffusion_def#channels": [16, 16, 32],
                  "diffusion_def#num_head_channels": [0, 0, 32] if overlay else 8, "diffusion_def#norm_num_groups": 8})
        assert p.get_parsed_content("diffusion_def").middle_block.attention.attn.use_flash_attention is True


def test_tiny_training_exports_both_stages_with_the_noise_levels(tiny):
    from common.weights import read_metadata

    models = tiny / "models"
    assert sorted(p.name for p in models.glob("*.safetensors")) == ["autoencoder.safetensors", "diffusion_model.safetensors"]
    meta = read_metadata(models / "diffusion_model.safetensors")
    assert meta["prediction_type"] == "v_prediction" and meta["max_noise_level"] == "350"
    assert float(meta["scale_factor"]) > 0
    assert not (BUNDLE / "runs").exists()


def test_half_spacing_affine_puts_each_block_of_fine_voxels_on_its_coarse_voxel():
    from common.data.brain import downsample2
    from common.sampling.upscale import half_spacing_affine

    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = [-80.0, -129.0, -75.0]
    _, coarse = downsample2(np.zeros((4, 4, 4), np.float32), fine)  # how the population makes its 2 mm copy
    np.testing.assert_allclose(half_spacing_affine(coarse), fine, atol=1e-12)
    oblique = np.array([[0.0, -2.0, 0.0, 10.0], [2.0, 0.0, 0.0, -5.0], [0.0, 0.0, 2.0, 3.0], [0, 0, 0, 1]])
    back = half_spacing_affine(oblique)
    # coarse voxel (i, j, k) is the mean of fine voxels 2i..2i+1: its centre is their centres' mean
    centre = oblique @ np.array([3.0, 1.0, 2.0, 1.0])
    fine_centres = [back @ np.array([6 + a, 2 + b, 4 + c, 1.0]) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    np.testing.assert_allclose(np.mean(fine_centres, axis=0), centre, atol=1e-12)


def test_upscaling_keeps_name_and_orientation_halves_spacing_same_seed_same_bytes(tiny, population, tmp_path):
    high, low = _pair(population)
    src = nib.load(str(low))
    data = np.asarray(src.dataobj, dtype=np.float32)
    # a tiny 2 mm volume in LAS orientation, off the model's multiple of 4 (padded and cropped back)
    las = np.array([[-2.0, 0, 0, 30.0], [0, 2.0, 0, -60.0], [0, 0, 2.0, -20.0], [0, 0, 0, 1]])
    tiny_in = _write(tmp_path / "in" / "tiny.nii.gz", data[10:28, 20:41, 14:33][::-1], las)
    a = _upscale(tiny, tmp_path / "a", input_image=tiny_in, seed=3)
    assert [f.name for f in a] == ["tiny.nii.gz"]
    out = nib.load(str(a[0]))
    assert out.shape == (36, 42, 38)
    assert nib.aff2axcodes(out.affine) == ("L", "A", "S")
    from common.sampling.upscale import half_spacing_affine

    np.testing.assert_allclose(out.affine, half_spacing_affine(las), atol=1e-5)
    up = out.get_fdata()
    assert 0.0 <= up.min() and up.max() <= 1.0
    _assert_consistent(up, data[10:28, 20:41, 14:33][::-1])
    b = _upscale(tiny, tmp_path / "b", input_image=tiny_in, seed=3)
    assert b[0].read_bytes() == a[0].read_bytes()
    c = _upscale(tiny, tmp_path / "c", input_image=tiny_in, seed=4)
    assert np.abs(nib.load(str(c[0])).get_fdata() - up).max() > 1e-4


def test_the_residual_is_what_cubic_interpolation_misses_and_adds_back_exactly(population):
    """Training's residual (InterpolationResiduald) plus the interpolation the upscaler adds it to is the image again;
    cubic B-spline misses less than trilinear; a constant interpolates to itself; base None leaves the image."""
    from common.sampling.upscale import interpolate_up
    from common.training import InterpolationResiduald

    high, low = (torch.from_numpy(np.asarray(nib.load(str(p)).dataobj, dtype=np.float32))[None] for p in _pair(population))
    out = InterpolationResiduald(base="cubic", scale=10.0)({"image": high, "image_lowres": low})
    base = interpolate_up(low, "cubic")
    assert base.shape == high.shape and out["image_lowres"] is low
    torch.testing.assert_close(base + out["image"] / 10.0, high, atol=1e-5, rtol=0)
    cubic_miss = (out["image"] / 10.0).abs().mean()
    assert 0 < cubic_miss < 0.8 * (high - interpolate_up(low, "trilinear")).abs().mean()
    torch.testing.assert_close(interpolate_up(torch.full((1, 4, 5, 6), 0.3), "cubic"), torch.full((1, 8, 10, 12), 0.3))
    same = {"image": high, "image_lowres": low}
    assert InterpolationResiduald(base=None)(same)["image"] is high
    with pytest.raises(ValueError, match="residual base 'lanczos' is not one of"):
        InterpolationResiduald(base="lanczos")


def test_cache_dataset_caches_every_deterministic_training_transform():
    """CacheDataset caches up to the first transform that is random or not a MONAI ``Transform``: the checks and the
    residual are ``Transform`` subclasses, so only the crop runs per item (the cubic interpolation alone takes 3 s
    per 1 mm volume; as plain classes they ran on every item of every epoch, 10 s per iteration, measured)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose, RandomizableTrait, Transform

    p = ConfigParser()
    p.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")])
    p.update({"bundle_root": str(BUNDLE)})
    load = p.get_parsed_content("load_transforms")
    chain = Compose(p.get_parsed_content("autoencoder_train#dataset#transform").transforms)
    assert chain.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform)) == len(load)
    assert type(load[-1]).__name__ == "InterpolationResiduald"


def test_a_residual_upscaler_adds_its_detail_to_the_interpolation(tiny, population, tmp_path):
    """With the decoded residual divided away (residual_scale 1e6) the upscaler's output is the cubic interpolation
    of its input: the base is added where training took it off."""
    from common.sampling.upscale import interpolate_up

    _, low = _pair(population)
    data = np.asarray(nib.load(str(low)).dataobj, dtype=np.float32)[8:24, 16:32, 12:28]
    crop = _write(tmp_path / "in" / "c.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    out = nib.load(str(_upscale(tiny, tmp_path / "o", input_image=crop, consistency=False, residual_scale=1e6)[0]))
    np.testing.assert_allclose(out.get_fdata(), interpolate_up(torch.from_numpy(data), "cubic").numpy(), atol=1e-4)
    ours = nib.load(str(_upscale(tiny, tmp_path / "r", input_image=crop, consistency=False)[0])).get_fdata()
    assert np.abs(ours - out.get_fdata()).max() > 1e-3  # at the trained scale the decoded detail is there


def test_the_noise_level_reaches_the_unet(tiny, population, tmp_path):
    """Same seed (same latent and condition noise), levels 0 and 300: different outputs; consistency off so the
    model's whole output is compared."""
    _, low = _pair(population)
    crop = _write(tmp_path / "in" / "c.nii.gz", np.asarray(nib.load(str(low)).dataobj)[8:24, 16:32, 12:28],
                  np.diag([2.0, 2.0, 2.0, 1.0]))
    outs = [nib.load(str(_upscale(tiny, tmp_path / f"l{lvl}", input_image=crop, noise_level=lvl, consistency=False)[0]))
            .get_fdata() for lvl in (0, 300)]
    assert np.abs(outs[0] - outs[1]).max() > 1e-4


def test_a_unet_without_class_embeddings_is_refused_in_training_and_sampling(population, tiny, tmp_path):
    from common.cli import one_line

    no_embeds = {**TINY_NETS, "diffusion_def#num_class_embeds": "$None"}  # (monai.bundle.run drops None overrides)
    with pytest.raises(Exception) as err:
        _run("train.json", "train_diffusion", datalist=str(population), output_dir=str(tmp_path / "runs"),
             num_threads=1, **TINY_TRAIN, **no_embeds, **{"diffusion_train#batch_size": 2,
                                                          "diffusion_train#max_epochs": 1,
                                                          "autoencoder_weights": str(tiny / "models" / "autoencoder.safetensors")})
    assert "has no class embedding (num_class_embeds is None)" in one_line(err.value)
    _, low = _pair(population)
    torch.manual_seed(0)
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "upscale.json")])
    p.update({"bundle_root": str(BUNDLE), **no_embeds})
    from common.sampling import LatentDiffusionSampler, Upscaler
    from common.sampling.settings import GenerationSettings

    from common.schedulers import build_scheduler

    sampler = LatentDiffusionSampler(p.get_parsed_content("autoencoder_def"), p.get_parsed_content("diffusion_def"),
                                     build_scheduler("ddim"), 1.0, [4, 8, 8, 8])
    upscaler = Upscaler(sampler, p.get_parsed_content("conditioner"))
    with pytest.raises(Exception) as err:
        upscaler.upscale(torch.rand(1, 8, 8, 8), 0, GenerationSettings(2, 1.0, False))
    assert "ignore the class labels / noise level: set num_class_embeds" in one_line(err.value)
    assert not (tmp_path / "runs" / "models").exists()


@pytest.mark.parametrize("case, message", [
    ("two_d", "this model takes single-channel 3D images"),
    ("too_bright", "intensities up to 1000, but this model reads [0, 1]"),
    ("level", "noise_level must be an integer in [0, 349], got 350"),
    ("garbage", "not a readable NIfTI image"),
    ("missing", "does not exist: fix the path"),
    ("nothing", "give exactly one of --input_image"),
    ("into_inputs", "holds the inputs and outputs take their names"),
    ("steps", "num_inference_steps must be an integer, got 2.5"),
    ("base", "residual base 'lanczos' is not one of ['cubic', 'trilinear']"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, case, message):
    good = _write(tmp_path / "in" / "good.nii.gz", np.random.default_rng(0).random((8, 8, 8)))
    out = tmp_path / "out"
    kw: dict = {"input_image": good}
    if case == "two_d":
        kw["input_image"] = _write(tmp_path / "bad" / "x.nii.gz", np.zeros((8, 8)))
    elif case == "too_bright":
        kw["input_image"] = _write(tmp_path / "bad" / "x.nii.gz", np.full((8, 8, 8), 1000.0))
    elif case == "level":
        kw["noise_level"] = 350
    elif case == "garbage":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "x.nii.gz").write_bytes(b"not a nifti")
        kw["input_image"] = str(tmp_path / "bad" / "x.nii.gz")
    elif case == "missing":
        kw["input_image"] = str(tmp_path / "nope.nii.gz")
    elif case == "nothing":
        kw["input_image"] = None
    elif case == "into_inputs":
        out = tmp_path / "in"
    elif case == "steps":
        kw["num_inference_steps"] = 2.5
    elif case == "base":
        kw["residual_base"] = "lanczos"
    before = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    with pytest.raises(Exception) as err:
        _upscale(tiny, out, **kw)
    from common.cli import one_line

    assert message in one_line(err.value) and "\n" not in one_line(err.value), one_line(err.value)
    after = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert after == before


def test_cascade_upscales_brain_ldm_3d_own_sample(tiny, tmp_path):
    """The cascade's 2 mm stage is brain_ldm_3d's own sample of the same seed (shipped weights, 2 DPM-Solver steps);
    its 1 mm output has the finer affine and averages back to it."""
    from common.sampling.upscale import half_spacing_affine

    _run("inference.json", model_dir=str(tiny / "models"), check_weights=False, output_dir=str(tmp_path / "cascade"),
         num_inference_steps=2, lowres_steps=2, progress=False, device="cpu", seed=7, age=0.9, save_lowres=True,
         **TINY_NETS)
    from monai.bundle import run

    low_cfg = REPO / "bundles" / "brain_ldm_3d" / "configs"
    run("run", config_file=str(low_cfg / "inference.json"), meta_file=str(low_cfg / "metadata.json"),
        logging_file=None, bundle_root=str(REPO / "bundles" / "brain_ldm_3d"), output_dir=str(tmp_path / "own"),
        scheduler="dpmpp2m", num_inference_steps=2, seed=7, age=0.9, progress=False, device="cpu")
    own = sorted((tmp_path / "own").glob("*.nii.gz"))
    high = sorted((tmp_path / "cascade").glob("*.nii.gz"))
    assert [p.name for p in high] == [p.name for p in own] == ["sample_g1.0_a0.9_v0.5_b0.5_seed7_0000.nii.gz"]
    low = nib.load(str(tmp_path / "cascade" / "lowres" / own[0].name))
    np.testing.assert_allclose(low.get_fdata(), nib.load(str(own[0])).get_fdata(), atol=1e-5)
    out = nib.load(str(high[0]))
    assert out.shape == (160, 224, 160)
    np.testing.assert_allclose(out.affine, half_spacing_affine(low.affine), atol=1e-5)
    _assert_consistent(out.get_fdata(), low.get_fdata())


def test_a_missing_lowres_bundle_names_the_download(tiny, tmp_path):
    from common.cli import one_line

    with pytest.raises(Exception) as err:
        _run("inference.json", model_dir=str(tiny / "models"), check_weights=False, output_dir=str(tmp_path / "o"),
             lowres_bundle=str(tmp_path / "brain_ldm_3d"), progress=False, device="cpu", **TINY_NETS)
    assert "python -m common.zoo download brain_ldm_3d" in one_line(err.value)
    assert not (tmp_path / "o").exists()


def test_shipped_weights_on_a_subject_of_another_seed(tmp_path):
    """The shipped weights (sha256 checked against the index) on the centre of a 1 mm subject the training never saw
    (population seed 9): the output averages back to the input block by block, beats trilinear interpolation of the
    same 2 mm input by more than 2 dB and is sharper, and is no worse than its own model-free part (cubic B-spline +
    the consistency projection) -- the card reports that the model's detail adds next to nothing on top of it."""
    if str(REPO / "ci") not in sys.path:
        sys.path.insert(0, str(REPO / "ci"))
    from bench_sr_cascade import sharpness  # the card's sharpness measure

    from common.data.brain import downsample2, generate_subject
    from common.sampling.upscale import interpolate_up, project_consistent

    models = BUNDLE / "models"
    assert 0 < sum(f.stat().st_size for f in models.glob("*.safetensors")) < 50_000_000
    subject = generate_subject(9, 0, dims=3, spacing=1)
    truth = subject.t1[40:120, 56:168, 40:120]
    low, low_affine = downsample2(truth, subject.affine)
    path = _write(tmp_path / "in" / "sub.nii.gz", low, low_affine)
    _run("upscale.json", input_image=path, output_dir=str(tmp_path / "out"), progress=False, device="cpu")
    out = nib.load(str(tmp_path / "out" / "sub.nii.gz")).get_fdata()
    _assert_consistent(out, low)
    low_t = torch.from_numpy(np.asarray(low, dtype=np.float32))
    trilinear = interpolate_up(low_t, "trilinear").numpy()
    cubic_projected = project_consistent(interpolate_up(low_t, "cubic")[None, None], low_t[None, None])[0, 0].clamp(0, 1)

    def psnr(x):
        return 10 * np.log10(1.0 / np.mean((np.asarray(x, dtype=np.float64) - truth) ** 2))

    assert psnr(out) > psnr(trilinear) + 2.0, (psnr(out), psnr(trilinear))
    assert psnr(out) > psnr(cubic_projected.numpy()) - 0.2, (psnr(out), psnr(cubic_projected.numpy()))
    assert sharpness(out, truth) > sharpness(trilinear, truth) + 0.05, (sharpness(out, truth), sharpness(trilinear, truth))


def test_paper_overlay_loads_old_checkpoints_strictly_and_upscales(tmp_path):
    """Old GenerativeModels (monai-generative 0.2.3) nets with paper.json's structure at tiny widths load strictly
    through paper.json, reproduce the old outputs, and upscale a volume (the level reaching the class embedding)."""
    pytest.importorskip("generative.networks.nets")
    from generative.networks.nets import AutoencoderKL as OldAE
    from generative.networks.nets import DiffusionModelUNet as OldUNet

    paper = json.loads((CONFIGS / "paper.json").read_text())
    skip = ("_target_", "include_fc", "use_combined_linear", "channels", "latent_channels", "in_channels",
            "out_channels", "num_head_channels", "num_class_embeds", "use_flash_attention")
    ae_kw = {k: v for k, v in paper["autoencoder_def"].items() if k not in skip}
    un_kw = {k: v for k, v in paper["diffusion_def"].items() if k not in skip}
    ae_kw.update(num_channels=[8, 16], latent_channels=4, norm_num_groups=8, in_channels=1, out_channels=1)
    un_kw.update(num_channels=[16, 16, 32], num_head_channels=[0, 0, 32], norm_num_groups=8, in_channels=5,
                 out_channels=4, num_class_embeds=350)
    torch.manual_seed(0)
    old_ae, old_unet = OldAE(**ae_kw).eval(), OldUNet(**un_kw).eval()
    with torch.no_grad():
        for prm in old_unet.parameters():
            prm.add_(torch.randn_like(prm) * 0.02)  # zero-initialised output layers would hide a mismatch
    models = tmp_path / "bundle" / "models" / "paper"
    models.mkdir(parents=True)
    torch.save(old_ae.state_dict(), models / "autoencoder.pth")
    torch.save(old_unet.state_dict(), models / "diffusion_model.pth")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "upscale.json"), str(CONFIGS / "paper.json")])
    parser.update({"bundle_root": str(tmp_path / "bundle"), "device": "cpu", "progress": False,
                   "autoencoder_def#channels": [8, 16], "autoencoder_def#norm_num_groups": 8,
                   "diffusion_def#channels": [16, 16, 32], "diffusion_def#num_head_channels": [0, 0, 32],
                   "diffusion_def#norm_num_groups": 8})
    upscaler = parser.get_parsed_content("upscaler")  # the sampler _requires_ the strict loads
    new_ae, new_unet = parser.get_parsed_content("autoencoder"), parser.get_parsed_content("diffusion")
    x, t, levels = torch.randn(1, 5, 8, 8, 8), torch.tensor([500]), torch.tensor([3])
    with torch.no_grad():
        ref = old_unet(x, timesteps=t, class_labels=levels)
        new = new_unet(x, timesteps=t, class_labels=levels)
        assert torch.allclose(new, ref, atol=1e-5), float((new - ref).abs().max())
        assert not torch.allclose(new, new_unet(x, timesteps=t, class_labels=torch.tensor([300])), atol=1e-5)
        z = torch.randn(1, 4, 8, 8, 8)
        assert torch.allclose(new_ae.decode_stage_2_outputs(z), old_ae.decode_stage_2_outputs(z), atol=1e-5)
    from common.sampling.settings import GenerationSettings

    out = upscaler.upscale(torch.rand(1, 8, 8, 8), 0, GenerationSettings(2, 1.0, False))
    assert out.shape == (1, 16, 16, 16) and torch.isfinite(out).all()
