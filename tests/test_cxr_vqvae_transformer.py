"""cxr_vqvae_transformer: VQ-VAE + autoregressive transformer (and a diffusion prior on the same VQ-VAE) on the
shared core. A tiny three-stage train on 10 built-in chest X-rays (one epoch per stage), sampling from either
prior (PNG of the promised size, same seed same bytes, independent of batch size), the stored ordering,
likelihood scoring (CSV values equal to a direct computation, maps, one-line errors with nothing written), the
codebook restart, and the published architecture's GenerativeModels checkpoints loading strictly."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "cxr_vqvae_transformer"
CONFIGS = BUNDLE / "configs"
SIZE = [64, 64]  # tiny images: an 8x8 token grid
TINY_NETS = {"vqvae_def#channels": [8, 16, 16], "vqvae_def#num_res_channels": [8, 16, 16], "vqvae_def#num_res_layers": 1,
             "transformer_def#attn_layers_dim": 16, "transformer_def#attn_layers_depth": 1,
             "transformer_def#attn_layers_heads": 2, "diffusion_def#channels": [16, 16, 32],
             "diffusion_def#num_head_channels": [0, 16, 16], "diffusion_def#norm_num_groups": 8, "image_size": SIZE}


def _settings():
    from common.sampling import GenerationSettings

    return GenerationSettings(num_inference_steps=3, progress=False)


def _run(overlay: str | None = None, run_id: str = "run", **overrides):
    from monai.bundle import run

    files = [str(CONFIGS / "inference.json")] + ([str(CONFIGS / overlay)] if overlay else [])
    return run(run_id, config_file=files, meta_file=str(CONFIGS / "metadata.json"), logging_file=None,
               bundle_root=str(BUNDLE), **overrides)


def _chain(exc: BaseException) -> list[str]:
    out, e = [], exc
    while e is not None:
        out.append(str(e))
        e = e.__cause__
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Folder with data/ (10 tiny chest X-rays) and runs/models/ (the three stages, one epoch each)."""
    from common.data.make import make

    root = tmp_path_factory.mktemp("cxr_vq")
    datalist = make("cxr", 10, root / "data", seed=1, size=64, progress=False)
    _run("train.json", datalist=str(datalist), output_dir=str(root / "runs"), num_threads=1, seed=0,
         **TINY_NETS, **{"discriminator_def#num_layers_d": 1, "discriminator_def#channels": 8,
                         "autoencoder_train#batch_size": 4, "autoencoder_train#max_epochs": 1,
                         "autoencoder_train#dead_code_interval": 1, "transformer_train#batch_size": 4,
                         "transformer_train#max_epochs": 1, "diffusion_train#batch_size": 4,
                         "diffusion_train#max_epochs": 1})
    return root


def _parser(root: Path, **overrides):
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(CONFIGS / "inference.json"))
    p.update({"bundle_root": str(BUNDLE), "model_dir": str(root / "runs" / "models"), "device": "cpu", **TINY_NETS,
              **overrides})
    return p


def _infer(root: Path, out: Path, **kw) -> list[Path]:
    _run(model_dir=str(root / "runs" / "models"), output_dir=str(out), progress=False, num_inference_steps=3,
         **TINY_NETS, **kw)
    return sorted(out.iterdir())


def test_bundle_verifies():
    from common.zoo.verify import verify_bundle

    failures = [f for f in verify_bundle(BUNDLE) if f.rule not in ("index-file", "index-stale")]
    assert failures == [], "\n".join(map(str, failures))


def test_training_exports_three_stages_with_ordering_and_scale(tiny):
    from common.tokens import read_ordering
    from common.weights import read_metadata

    models = tiny / "runs" / "models"
    assert sorted(f.name for f in models.iterdir()) == [
        "diffusion_prior.safetensors", "transformer.safetensors", "vqvae.safetensors"]
    ordering = read_ordering(str(models / "transformer.safetensors"))
    assert ordering.token_shape == (8, 8) and ordering.ordering_type == "raster_scan"
    assert torch.equal(ordering.order, torch.arange(64))
    meta = read_metadata(models / "diffusion_prior.safetensors")
    assert meta["prediction_type"] == "v_prediction" and float(meta["scale_factor"]) > 0
    assert read_metadata(models / "transformer.safetensors")["num_codes"] == "256"
    assert not (BUNDLE / "runs").exists()  # exports go under --output_dir, not into the bundle
    assert (tiny / "runs" / "transformer" / "tensorboard").is_dir()


@pytest.mark.parametrize("prior", ["transformer", "diffusion"])
def test_sampling_either_prior_names_sizes_same_seed_same_bytes(tiny, tmp_path, prior):
    a = _infer(tiny, tmp_path / "a", prior=prior, num_samples=3, seed=5)
    b = _infer(tiny, tmp_path / "b", prior=prior, num_samples=3, seed=5, batch_size=1)
    assert [f.name for f in a] == [f"cxr_{prior}_seed5_{i:04d}.png" for i in range(3)]
    for f in a:
        img = np.asarray(Image.open(f))
        assert img.shape == (64, 64) and img.dtype == np.uint8
    # batch 8 (one batch of 3) and batch 1 give the same files
    assert [x.read_bytes() for x in a] == [y.read_bytes() for y in b]
    # another seed, another draw (compared before decoding: the one-epoch decoder is nearly constant)
    sampler = _parser(tiny, prior=prior).get_parsed_content("sampler")
    draws = [sampler.sample_latents(num_samples=1, generator=torch.Generator().manual_seed(s), settings=_settings())
             for s in (5, 6)]
    assert not torch.equal(draws[0], draws[1])


def test_top_k_one_is_greedy_and_temperature_changes_samples(tiny):
    p = _parser(tiny, top_k=1)
    sampler = p.get_parsed_content("transformer_sampler")
    greedy = [sampler.sample_latents(num_samples=1, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert torch.equal(greedy[0], greedy[1])  # one candidate per token: the seed does not matter
    assert greedy[0].shape == (1, 8, 8) and greedy[0].dtype == torch.long and int(greedy[0].max()) < 256
    hot = _parser(tiny, temperature=5.0).get_parsed_content("transformer_sampler")
    cold = _parser(tiny, temperature=0.05).get_parsed_content("transformer_sampler")
    draws = [s.sample_latents(num_samples=4, generator=torch.Generator().manual_seed(0)) for s in (hot, cold)]
    distinct = [len(torch.unique(d)) for d in draws]
    assert distinct[0] > distinct[1]  # a hotter distribution uses more codes


def test_next_token_inverts_the_cdf():
    from common.sampling.autoregressive import next_token

    logits = torch.log(torch.tensor([[0.1, 0.2, 0.7]]))
    picks = [int(next_token(logits, torch.tensor([u]), 1.0, 0)) for u in (0.05, 0.15, 0.29, 0.31, 0.99)]
    assert picks == [0, 1, 1, 2, 2]
    assert int(next_token(logits, torch.tensor([0.0]), 1.0, 1)) == 2  # top-1 keeps only the most likely


@pytest.mark.parametrize("combined, flash", [(False, True), (True, False)])
def test_cached_decoding_gives_the_full_forward_logits(combined, flash):
    from monai.networks.nets import DecoderOnlyTransformer

    from common.tokens.cache import KVCacheDecoder

    torch.manual_seed(0)
    net = DecoderOnlyTransformer(num_tokens=20, max_seq_len=16, attn_layers_dim=32, attn_layers_depth=2,
                                 attn_layers_heads=4, use_combined_linear=combined, use_flash_attention=flash).eval()
    seq = torch.randint(0, 20, (3, 16))
    with torch.inference_mode():
        full = net(seq)
    decoder = KVCacheDecoder(net)
    stepped = torch.stack([decoder.step(seq[:, i]) for i in range(16)], dim=1)
    assert (full - stepped).abs().max() < 1e-5
    with pytest.raises(ValueError, match="at most 16 tokens"):
        decoder.step(seq[:, 0])


def test_random_ordering_is_seeded_stored_and_leaves_numpy_alone():
    from common.tokens import TokenOrdering
    from common.tokens.ordering import OrderingError

    state = np.random.get_state()[1].copy()
    a = TokenOrdering.build("random", (4, 4), seed=3)
    b = TokenOrdering.build("random", (4, 4), seed=3)
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(a.order, b.order) and not torch.equal(a.order, torch.arange(16))
    back = TokenOrdering.from_json(a.to_json())
    assert torch.equal(back.order, a.order) and back.token_shape == (4, 4)
    grid = torch.arange(32).reshape(2, 4, 4)
    assert torch.equal(a.to_grid(a.to_sequence(grid)), grid)
    with pytest.raises(OrderingError, match="not a permutation"):
        TokenOrdering([0, 0, 1, 2], (2, 2))


def test_prepare_batch_shifts_with_bos():
    from common.tokens import TokenOrdering
    from common.training import TokenPrepareBatch

    prep = TokenPrepareBatch(TokenOrdering.build("raster_scan", (2, 2)), bos_token=9)
    inputs, targets = prep({"tokens": torch.tensor([[[1, 2], [3, 4]]])})
    assert inputs.tolist() == [[9, 1, 2, 3]] and targets.tolist() == [[1, 2, 3, 4]]


def test_scoring_csv_equals_direct_likelihoods_and_writes_maps(tiny, tmp_path):
    from common.tokens import token_log_likelihoods

    images = sorted((tiny / "data").glob("*.png"))[:3]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for f in images:
        (inputs / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "scores"
    _run("score.json", model_dir=str(tiny / "runs" / "models"), output_dir=str(out), input_dir=str(inputs), **TINY_NETS)
    rows = list(csv.DictReader((out / "likelihoods.csv").open()))
    assert [Path(r["file"]).name for r in rows] == [f.name for f in images]
    p = _parser(tiny)
    p.get_parsed_content("load_vqvae"), p.get_parsed_content("load_transformer")
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f), dtype=np.float32).T[None] / 255.0) for f in images])
    direct = token_log_likelihoods(p.get_parsed_content("vqvae"), p.get_parsed_content("transformer"),
                                   p.get_parsed_content("ordering"), x)
    assert direct.shape == (3, 8, 8) and float(direct.max()) <= 0
    for row, lp in zip(rows, direct):
        assert float(row["log_likelihood_sum"]) == pytest.approx(float(lp.sum()), abs=2e-3)
        assert float(row["log_likelihood_mean"]) == pytest.approx(float(lp.mean()), abs=1e-5)
        assert int(row["tokens"]) == 64
        m = np.asarray(Image.open(out / row["map"]))
        assert m.shape == (64, 64) and m.dtype == np.uint8
    single = tmp_path / "one"
    _run("score.json", model_dir=str(tiny / "runs" / "models"), output_dir=str(single),
         input_image=str(images[0]), write_maps=False, **TINY_NETS)
    assert sorted(f.name for f in single.iterdir()) == ["likelihoods.csv"]


def _bad_png(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "big":
        Image.fromarray(np.zeros((96, 96), np.uint8)).save(path)
    elif kind == "rgb":
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)
    else:
        path.write_bytes(b"not a png")
    return path


@pytest.mark.parametrize("kind, message", [
    ("big", "is 96x96 pixels: this model scores 64x64 images; resize it first"),
    ("rgb", "has 3 channels: this model scores single-channel (grey) images"),
    ("broken", "cannot read"),
])
def test_scoring_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, kind, message):
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:
        _run("score.json", model_dir=str(tiny / "runs" / "models"), output_dir=str(out),
             input_image=str(_bad_png(tmp_path, kind)), **TINY_NETS)
    hit = [m for m in _chain(err.value) if message in m]
    assert hit and "\n" not in hit[0], _chain(err.value)
    assert not out.exists()


@pytest.mark.parametrize("override, message", [
    ({"prior": "gan"}, "--prior 'gan' is unknown: use one of diffusion, transformer"),
    ({"temperature": 0}, "temperature must be a finite number in [0.001, 100]"),
    ({"top_k": 2.5}, "top_k must be an integer, got 2.5"),
])
def test_bad_sampling_input_is_one_line_and_writes_nothing(tiny, tmp_path, override, message):
    out = tmp_path / "out"
    with pytest.raises(Exception) as err:
        _infer(tiny, out, **override)
    hit = [m for m in _chain(err.value) if message in m]
    assert hit and "\n" not in hit[0], _chain(err.value)
    assert not out.exists()


def test_dead_codes_restart_onto_encoder_outputs():
    from monai.networks.nets import VQVAE

    from common.training import RestartDeadCodes, VQAutoencoderInferer

    torch.manual_seed(0)
    vq = VQVAE(spatial_dims=2, in_channels=1, out_channels=1, channels=(8, 8), num_res_layers=1,
               num_res_channels=(8, 8), downsample_parameters=((2, 4, 1, 1),) * 2,
               upsample_parameters=((2, 4, 1, 1, 0),) * 2, num_embeddings=16, embedding_dim=2)
    inferer = VQAutoencoderInferer()
    inferer(torch.rand(2, 1, 16, 16), vq.train())
    quantizer = vq.quantizer.quantizer
    quantizer.ema_cluster_size.zero_()
    quantizer.ema_cluster_size[:4] = 5.0
    kept = quantizer.embedding.weight[:4].clone()
    moved = RestartDeadCodes(vq, inferer, interval=1).restart()
    assert moved == 12 and torch.equal(quantizer.embedding.weight[:4], kept)
    encodings = inferer.last_encodings
    for code in quantizer.embedding.weight[4:]:
        assert (encodings - code).abs().sum(dim=1).min() < 1e-6  # each restarted code is an encoder output
    assert bool((quantizer.ema_cluster_size[4:] == 1.0).all())


def test_shipped_weights_sample_and_score(tmp_path):
    """The shipped weights: under 50 MB, ordering stored, one sample per prior, a real test image scored."""
    from common.tokens import read_ordering

    models = BUNDLE / "models"
    assert 0 < sum(f.stat().st_size for f in models.glob("*.safetensors")) < 50_000_000
    assert read_ordering(str(models / "transformer.safetensors")).token_shape == (16, 16)
    for prior in ("transformer", "diffusion"):
        _run(output_dir=str(tmp_path / prior), prior=prior, num_inference_steps=5, scheduler="dpmpp2m", progress=False,
             device="cpu")
        (f,) = sorted((tmp_path / prior).iterdir())
        img = np.asarray(Image.open(f))
        assert f.name == f"cxr_{prior}_seed0_0000.png" and img.shape == (128, 128) and img.std() > 10


def _old_nets():
    gen = pytest.importorskip("generative.networks.nets")
    torch.manual_seed(0)
    vq = gen.VQVAE(spatial_dims=2, in_channels=1, out_channels=1, num_channels=(8, 16, 16), num_res_layers=3,
                   num_res_channels=(8, 16, 16), downsample_parameters=((2, 4, 1, 1),) * 3,
                   upsample_parameters=((2, 4, 1, 1, 0),) * 3, num_embeddings=512, embedding_dim=3).eval()
    tr = gen.DecoderOnlyTransformer(num_tokens=513, max_seq_len=4096, attn_layers_dim=64, attn_layers_depth=8,
                                    attn_layers_heads=8).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for p in list(vq.parameters()) + list(tr.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return vq, tr


def test_paper_architecture_loads_generative_models_checkpoints_strictly(tmp_path):
    from monai.bundle import ConfigParser

    old_vq, old_tr = _old_nets()
    paper = tmp_path / "models" / "paper"
    paper.mkdir(parents=True)
    torch.save(old_vq.state_dict(), paper / "vqvae.pth")
    torch.save(old_tr.state_dict(), paper / "transformer.pth")
    p = ConfigParser()
    p.read_config([str(CONFIGS / "inference.json"), str(CONFIGS / "paper.json")])
    p["bundle_root"] = str(tmp_path)
    assert p.get_parsed_content("token_shape") == [64, 64] and p["num_codes"] == 512
    assert p.get_parsed_content("ordering").length == 4096
    p["vqvae_def"]["channels"] = p["vqvae_def"]["num_res_channels"] = [8, 16, 16]  # narrow copy, same keys
    vq = p.get_parsed_content("load_vqvae").eval()
    tr = p.get_parsed_content("load_transformer").eval()
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    tokens = torch.randint(0, 513, (1, 100), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert torch.equal(vq.index_quantize(x), old_vq.index_quantize(x))
        assert (vq(x)[0] - old_vq(x)[0]).abs().max() < 1e-5
        assert (tr(tokens) - old_tr(tokens)).abs().max() < 1e-4
