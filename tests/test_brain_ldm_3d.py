"""brain_ldm_3d bundle: configs, a tiny two-stage train whose weights inference.json loads, inference on the shipped
weights (shape, dtype, range, affine, determinism), bad covariates, and the paper overlay's old-checkpoint load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_ldm_3d"
CONFIGS = BUNDLE / "configs"
AFFINE_2MM = np.array([[2.0, 0, 0, -80], [0, 2.0, 0, -130], [0, 0, 2.0, -76], [0, 0, 0, 1]])

# tiny networks for the few-iteration runs (same config structure as the shipped ones)
TINY_AE = {"autoencoder_def#channels": [8, 8, 8], "autoencoder_def#norm_num_groups": 8}
TINY_DISC = {"discriminator_def#num_layers_d": 1, "discriminator_def#channels": 4}
TINY_UNET = {"diffusion_def#channels": [16, 16], "diffusion_def#attention_levels": [False, True],
             "diffusion_def#num_head_channels": [0, 16], "diffusion_def#norm_num_groups": 8}


def write_tiny_population(folder: Path, n: int = 3, shape=(16, 16, 16)) -> Path:
    """n tiny 'brains' (an ellipsoid of tissue with a dark core) with covariates, and their datalist."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    entries = []
    for i in range(n):
        img = (0.9 * (r < 0.8) - 0.6 * (r < 0.2 + 0.1 * i)).astype(np.float32)
        name = f"sub-{i}.nii.gz"
        nib.save(nib.Nifti1Image(img, AFFINE_2MM), str(folder / name))
        entries.append({"image": name, "gender": float(i % 2), "age": 0.2 + 0.2 * i, "ventricular_vol": 0.1 * i,
                        "brain_vol": 0.5})
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": entries, "validation": entries[:1], "test": entries[:1]}))
    return datalist


def bundle_run(config: str | list[str], run_id: str = "run", **overrides):
    """`python -m monai.bundle run RUN_ID --config_file ...`; every config other than inference.json is an overlay
    read over inference.json (which defines the networks)."""
    from monai.bundle import run

    files = [str(CONFIGS / c) for c in ([config] if isinstance(config, str) else config)]
    if files[0] != str(CONFIGS / "inference.json"):
        files.insert(0, str(CONFIGS / "inference.json"))
    return run(run_id, config_file=files if len(files) > 1 else files[0], meta_file=str(CONFIGS / "metadata.json"),
               logging_file=None, **overrides)


def read_nifti(path):
    import nibabel as nib

    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine, img.get_data_dtype()


def test_configs_parse_and_overrides():
    from monai.bundle import ConfigParser

    for overlay in ([], ["paper.json"]):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json")] + [str(CONFIGS / o) for o in overlay])
        for key in ("bundle_root", "output_dir", "device", "seed", "num_samples", "num_inference_steps",
                    "scheduler", "guidance_scale", "gender", "age", "ventricular_vol", "brain_vol", "run"):
            assert key in parser, key
    paper = json.loads((CONFIGS / "paper.json").read_text())
    assert paper["diffusion_def"]["channels"] == [256, 512, 768]
    assert paper["diffusion_def"]["num_head_channels"] == [0, 512, 768]
    assert paper["autoencoder_def"]["channels"] == [64, 128, 128, 128]
    assert paper["latent_shape"] == [3, 20, 28, 20] and paper["diffusion_def"]["include_fc"] is True
    for overlay in ([], ["multi_gpu_train.json"]):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json")] + [str(CONFIGS / o) for o in overlay])
        assert {"run", "train_autoencoder", "train_diffusion"} <= set(parser.get())
        assert parser["train_scheduler"]["schedule"] == "scaled_linear_beta"
        assert parser["diffusion_def"] == json.loads((CONFIGS / "inference.json").read_text())["diffusion_def"]
    # the networks are written once: only inference.json and the paper overlay define them
    for name in ("train.json", "evaluate.json", "multi_gpu_train.json"):
        assert "diffusion_def" not in json.loads((CONFIGS / name).read_text()), name
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")])
    assert parser["autoencoder_train"]["sampler"]["_target_"] == "DistributedSampler"
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["depends_on"] == [] and "network_data_format" in meta


def test_tiny_train_both_stages_then_inference(tmp_path):
    from common.weights import read_metadata

    datalist = write_tiny_population(tmp_path / "data")
    root = tmp_path / "bundle"
    common = {"bundle_root": str(root), "datalist": str(datalist), "image_size": [16, 16, 16], "num_threads": 1,
              "output_dir": str(tmp_path / "runs"), **TINY_AE, **TINY_DISC, **TINY_UNET}
    bundle_run("train.json", "train_autoencoder", **common, **{
        "autoencoder_train#patch_size": [16, 16, 16], "autoencoder_train#max_epochs": 1,
        "autoencoder_train#batch_size": 2, "autoencoder_train#adversarial_warmup_iterations": 1,
        "autoencoder_train#perceptual_network": None})
    models = tmp_path / "runs" / "models"  # exports go under --output_dir, never into the bundle by default
    ae = models / "autoencoder.safetensors"
    assert ae.is_file() and read_metadata(ae)["iteration"] == "2"
    assert list((tmp_path / "runs" / "autoencoder" / "checkpoints").glob("*.pt"))
    assert list((tmp_path / "runs" / "autoencoder" / "tensorboard").glob("events.*"))
    assert not (tmp_path / "runs" / "diffusion").exists()  # a stage builds only itself
    assert not (root / "models").exists()
    bundle_run("train.json", "train_diffusion", **common, **{
        "diffusion_train#max_epochs": 2, "diffusion_train#batch_size": 2})
    dm = models / "diffusion_model.safetensors"
    meta = read_metadata(dm)
    scale = float(meta["scale_factor"])
    assert 0 < scale < 1e3 and meta["iteration"] == "4" and meta["covariates"] == "gender,age,ventricular_vol,brain_vol"
    # a new machine (no checkpoints) continues the exported weights: counters carry on from their metadata
    shutil.copy(dm, tmp_path / "init.safetensors")
    bundle_run("train.json", "train_diffusion", **{**common, "output_dir": str(tmp_path / "runs2")}, **{
        "diffusion_train#max_epochs": 3, "diffusion_train#batch_size": 2,
        "autoencoder_weights": str(ae), "diffusion_train#init_weights": str(tmp_path / "init.safetensors")})
    dm2 = tmp_path / "runs2" / "models" / "diffusion_model.safetensors"
    assert read_metadata(dm2)["iteration"] == "6" and read_metadata(dm2)["epoch"] == "3"

    infer = {"bundle_root": str(root), "model_dir": str(models), "latent_shape": [3, 4, 4, 4], "num_inference_steps": 3,
             "num_samples": 2, "seed": 7, "progress": False, "age": 0.3, **TINY_AE, **TINY_UNET}
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    bundle_run("inference.json", output_dir=str(out1), **infer)
    bundle_run("inference.json", output_dir=str(out2), **infer)
    files = sorted(out1.glob("*.nii.gz"))
    assert [f.name for f in files] == [f"sample_g1.0_a0.3_v0.5_b0.5_seed7_000{i}.nii.gz" for i in (0, 1)]
    a, affine, dtype = read_nifti(files[0])
    b, _, _ = read_nifti(out2 / files[0].name)
    c, _, _ = read_nifti(files[1])
    assert a.shape == (16, 16, 16) and dtype == np.float32
    assert np.allclose(affine, AFFINE_2MM)
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.std() > 0
    assert np.array_equal(a, b)  # same seed, same output
    assert not np.array_equal(a, c)  # different samples within a run


@pytest.fixture(scope="module")
def shipped():
    ae, dm = BUNDLE / "models" / "autoencoder.safetensors", BUNDLE / "models" / "diffusion_model.safetensors"
    if not (ae.is_file() and dm.is_file()):
        pytest.fail(f"shipped weights missing in {BUNDLE / 'models'}")
    return ae, dm


def test_inference_on_shipped_weights(tmp_path, shipped):
    from common.weights import read_scale_factor

    out = tmp_path / "out"
    bundle_run("inference.json", bundle_root=str(BUNDLE), output_dir=str(out), num_inference_steps=3,
               seed=1, progress=False, gender=0.0, age=0.9)
    files = list(out.glob("*.nii.gz"))
    assert len(files) == 1
    a, affine, dtype = read_nifti(files[0])
    assert a.shape == (80, 112, 80) and dtype == np.float32
    assert np.allclose(affine, AFFINE_2MM)
    assert a.min() >= 0.0 and a.max() <= 1.0 and np.isfinite(a).all()
    assert read_scale_factor(shipped[1]) > 0


@pytest.mark.parametrize("bad, message", [({"age": 1.5}, "'age'=1.5 is outside [0, 1]"),
                                          ({"brain_vol": ""}, "missing covariate 'brain_vol'"),
                                          ({"gender": -0.1}, "'gender'=-0.1 is outside")])
def test_bad_covariates_fail_cleanly(tmp_path, shipped, bad, message):
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:
        bundle_run("inference.json", bundle_root=str(BUNDLE), output_dir=str(out), num_inference_steps=2,
                   progress=False, **bad)
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any(message in m for m in chain), chain
    assert not out.exists() or not any(out.iterdir())  # nothing partial


def test_prediction_type_other_than_the_weights_fails_cleanly(tmp_path, shipped):
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:
        bundle_run("inference.json", bundle_root=str(BUNDLE), output_dir=str(out), num_inference_steps=2,
                   progress=False, prediction_type="epsilon")
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any("trained with prediction_type 'v_prediction' but the config asks for 'epsilon'; pass "
               "--prediction_type v_prediction" in m for m in chain), chain
    assert not out.exists() or not any(out.iterdir())


def test_paper_overlay_loads_old_checkpoints_strictly(tmp_path):
    """Old GenerativeModels (monai-generative 0.2.3) nets with the paper.json structure at tiny widths: their
    state dicts load strictly through paper.json, reproduce the old outputs, and give a finite sample."""
    from generative.networks.nets import AutoencoderKL as OldAE
    from generative.networks.nets import DiffusionModelUNet as OldUNet

    paper = json.loads((CONFIGS / "paper.json").read_text())
    ae_kw = {k: v for k, v in paper["autoencoder_def"].items()
             if k not in ("_target_", "include_fc", "use_combined_linear", "channels", "latent_channels")}
    un_kw = {k: v for k, v in paper["diffusion_def"].items()
             if k not in ("_target_", "include_fc", "use_combined_linear", "channels", "in_channels", "out_channels",
                          "cross_attention_dim", "num_head_channels")}
    ae_kw.update(num_channels=[8, 8, 8, 8], latent_channels=3, norm_num_groups=8)
    un_kw.update(num_channels=[16, 16, 32], num_head_channels=[0, 16, 32], norm_num_groups=8, in_channels=7,
                 out_channels=3, cross_attention_dim=4)
    torch.manual_seed(0)
    old_ae, old_unet = OldAE(**ae_kw).eval(), OldUNet(**un_kw).eval()
    models = tmp_path / "bundle" / "models" / "paper"
    models.mkdir(parents=True)
    torch.save(old_ae.state_dict(), models / "autoencoder.pth")
    torch.save(old_unet.state_dict(), models / "diffusion_model.pth")

    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "paper.json")])
    parser.update({"bundle_root": str(tmp_path / "bundle"), "device": "cpu", "latent_shape": [3, 4, 4, 4],
                   "num_inference_steps": 2, "progress": False, "decode": "full",
                   "autoencoder_def#channels": [8, 8, 8, 8], "autoencoder_def#norm_num_groups": 8,
                   "diffusion_def#channels": [16, 16, 32], "diffusion_def#num_head_channels": [0, 16, 32],
                   "diffusion_def#norm_num_groups": 8})
    parser.parse()
    sampler = parser.get_parsed_content("sampler")  # _requires_ the strict loads
    assert parser.get_parsed_content("scale_factor") == 1.0
    assert sampler.scheduler.prediction_type == "epsilon"  # the published model; the shipped one is v_prediction
    new_ae, new_unet = parser.get_parsed_content("autoencoder"), parser.get_parsed_content("diffusion")
    x = torch.randn(1, 3, 4, 4, 4)
    cond = parser.get_parsed_content("condition")
    t = torch.tensor([500])
    from common.sampling.denoiser import unet_input

    with torch.no_grad():
        ref = old_unet(unet_input(x, cond), timesteps=t, context=cond.context)
        new = new_unet(unet_input(x, cond), timesteps=t, context=cond.context)
        assert torch.allclose(new, ref, atol=1e-5), float((new - ref).abs().max())
        assert torch.allclose(new_ae.decode_stage_2_outputs(x), old_ae.decode_stage_2_outputs(x), atol=1e-5)
    image = sampler.sample(cond, None, num_samples=1, generator=torch.Generator().manual_seed(0),
                           num_inference_steps=2, progress=False)
    assert image.shape == (1, 1, 32, 32, 32) and torch.isfinite(image).all()
