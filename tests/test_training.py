"""common.training: losses, diffusion batch preparation (2D/3D, epsilon/v), latent cache, handlers, conditioner."""

from __future__ import annotations

import math
import os

import pytest
import torch

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------- covariates
def test_covariate_conditioner_batch_and_values():
    from common.conditioning.covariates import CovariateConditioner

    cond = CovariateConditioner()
    batch = {"gender": torch.tensor([0.0, 1.0]), "age": torch.tensor([0.2, 0.8]),
             "ventricular_vol": torch.tensor([0.1, 0.9]), "brain_vol": torch.tensor([0.5, 0.4])}
    c = cond.from_batch(batch)
    assert c.vector.shape == (2, 4) and c.context.shape == (2, 1, 4)
    assert torch.equal(c.vector[1], torch.tensor([1.0, 0.8, 0.9, 0.4]))
    assert torch.equal(c.context[:, 0], c.vector)
    from common.sampling.denoiser import unet_input

    latent = torch.zeros(2, 3, 5, 6, 7)
    x = unet_input(latent, c)
    assert x.shape == (2, 7, 5, 6, 7) and float(x[1, 5, 4, 5, 6]) == pytest.approx(0.9)
    v = cond.from_values(3, gender=0, age=0.25, ventricular_vol=1, brain_vol=0.0)
    assert v.vector.shape == (3, 4) and torch.equal(v.vector[2], torch.tensor([0.0, 0.25, 1.0, 0.0]))
    assert torch.count_nonzero(cond.null(2).vector) == 0


@pytest.mark.parametrize(
    "values, message",
    [
        ({"gender": 1, "age": 1.5, "ventricular_vol": 0.5, "brain_vol": 0.5}, "'age'=1.5 is outside [0, 1]"),
        ({"gender": 1, "age": None, "ventricular_vol": 0.5, "brain_vol": 0.5}, "missing covariate 'age'"),
        ({"gender": 1, "age": 0.5, "ventricular_vol": "big", "brain_vol": 0.5}, "is not a number"),
        ({"gender": 1, "age": 0.5, "ventricular_vol": 0.5}, "missing covariate 'brain_vol'"),
        ({"gender": 1, "age": 0.5, "ventricular_vol": 0.5, "brain_vol": float("nan")}, "outside [0, 1]"),
        ({"gender": 1, "age": 0.5, "ventricular_vol": 0.5, "brain_vol": 0.5, "bmi": 0.1}, "unknown covariate"),
    ],
)
def test_covariate_errors_are_one_line(values, message):
    from common.conditioning.covariates import CovariateConditioner, CovariateError

    with pytest.raises(CovariateError) as err:
        CovariateConditioner().from_values(1, **values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_covariate_batch_out_of_range():
    from common.conditioning.covariates import CovariateConditioner, CovariateError

    batch = {"gender": torch.tensor([2.0]), "age": torch.tensor([0.1]),
             "ventricular_vol": torch.tensor([0.1]), "brain_vol": torch.tensor([0.1])}
    with pytest.raises(CovariateError, match="'gender' in the batch is outside"):
        CovariateConditioner().from_batch(batch)
    with pytest.raises(CovariateError, match="no covariate 'age'"):
        CovariateConditioner().from_batch({"gender": torch.tensor([1.0])})


# ----------------------------------------------------------------------------------------- stage 1 losses
def test_kl_matches_closed_form():
    from common.training.autoencoder import kl_divergence

    mu, sigma = torch.full((2, 3, 4), 0.5), torch.full((2, 3, 4), 2.0)
    per_voxel = 0.5 * (0.25 + 4.0 - math.log(4.0) - 1.0)
    assert float(kl_divergence(mu, sigma)) == pytest.approx(per_voxel * 12, rel=1e-6)
    assert float(kl_divergence(torch.zeros(1, 5), torch.ones(1, 5))) == pytest.approx(0.0, abs=1e-6)


def test_autoencoder_loss_and_inferer():
    from monai.networks.nets import AutoencoderKL

    from common.training.autoencoder import AutoencoderLoss, KLAutoencoderInferer, kl_divergence

    torch.manual_seed(0)
    net = AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), latent_channels=2,
                        num_res_blocks=1, norm_num_groups=4, attention_levels=(False, False),
                        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)
    x = torch.rand(2, 1, 16, 16)
    inferer = KLAutoencoderInferer()
    recon = inferer(x, net)
    assert recon.shape == x.shape and set(inferer.regularisers) == {"kl"}
    loss = AutoencoderLoss(inferer, kl_weight=0.5)
    total = loss(recon, x)
    expected = torch.nn.functional.l1_loss(recon, x) + 0.5 * inferer.regularisers["kl"]
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert set(loss.last_terms) == {"l1", "kl"}
    total.backward()
    assert net.encoder.blocks[0].conv.weight.grad is not None
    assert float(kl_divergence(torch.zeros(1, 2), torch.ones(1, 2))) == 0.0


def _vqvae():
    from monai.networks.nets import VQVAE

    torch.manual_seed(0)
    return VQVAE(spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 8), num_res_channels=(4, 8),
                 num_res_layers=1, downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)),
                 upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)), num_embeddings=16, embedding_dim=2)


def test_vq_autoencoder_loss_inferer_and_codebook_stats():
    from common.training.autoencoder import AutoencoderLoss, VQAutoencoderInferer, codebook_stats

    net = _vqvae()
    x = torch.rand(2, 1, 16, 16)
    inferer = VQAutoencoderInferer()
    recon = inferer(x, net)
    assert recon.shape == x.shape and set(inferer.regularisers) == {"quantization"}
    loss = AutoencoderLoss(inferer, quantization_weight=0.25)
    total = loss(recon, x)
    expected = torch.nn.functional.l1_loss(recon, x) + 0.25 * inferer.regularisers["quantization"]
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert {"l1", "quantization", "perplexity", "codebook_usage"} <= set(loss.last_terms)
    # the stats are those of the indices the quantiser really chose in that forward
    indices = net.index_quantize(x)
    stats = codebook_stats(indices, 16)
    assert 1.0 <= loss.last_terms["perplexity"] <= 16.0
    assert stats["codebook_usage"] == pytest.approx(len(indices.unique()) / 16)
    # closed forms: one code -> perplexity 1, usage 1/16; all 16 codes equally -> 16, 1.0
    assert codebook_stats(torch.zeros(10, dtype=torch.long), 16) == pytest.approx({"perplexity": 1.0, "codebook_usage": 1 / 16})
    assert codebook_stats(torch.arange(32) % 16, 16) == pytest.approx({"perplexity": 16.0, "codebook_usage": 1.0})


def test_generator_adversarial_warmup_and_state():
    from common.training.autoencoder import DiscriminatorAdversarialLoss, GeneratorAdversarialLoss

    g = GeneratorAdversarialLoss(weight=0.1, warmup_iterations=2)
    logits = [torch.zeros(1, 4), torch.zeros(2, 1, 3, 3)]  # PatchDiscriminator: features..., last = logits
    assert float(g(logits)) == 0.0 and float(g(logits)) == 0.0
    # least squares towards 1 from logits 0: mean((0 - 1)^2) = 1, times weight
    assert float(g(logits)) == pytest.approx(0.1)
    restored = GeneratorAdversarialLoss(weight=0.1, warmup_iterations=2)
    restored.load_state_dict(g.state_dict())
    assert int(restored.calls) == 3 and restored.active
    d = DiscriminatorAdversarialLoss(weight=1.0)
    assert float(d([torch.ones(1, 1, 2, 2)], [torch.zeros(1, 1, 2, 2)])) == pytest.approx(0.0)
    assert float(d([torch.zeros(1, 1, 2, 2)], [torch.ones(1, 1, 2, 2)])) == pytest.approx(1.0)


def test_perceptual_loss_never_downloads(tmp_path, monkeypatch, caplog):
    from common.training.autoencoder import build_perceptual_loss

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with caplog.at_level("WARNING"):
        assert build_perceptual_loss(3, "radimagenet_resnet50") is None
    assert "perceptual loss DISABLED" in caplog.text and str(tmp_path) in caplog.text
    assert build_perceptual_loss(3, None) is None
    assert build_perceptual_loss(2, "squeeze") is None  # lpips nets would download: never built here


# ----------------------------------------------------------------------------------------- stage 2
@pytest.mark.parametrize("spatial, prediction_type", [((6, 6), "v_prediction"), ((4, 6, 4), "epsilon")])
def test_prepare_batch_targets_and_inferer(spatial, prediction_type):
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.schedulers import DDPMScheduler

    from common.conditioning.covariates import CovariateConditioner
    from common.training.diffusion import ConditionedDiffusionInferer, ConditionedDiffusionPrepareBatch

    torch.manual_seed(0)
    sched = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
                          beta_end=0.0205, prediction_type=prediction_type)
    prep = ConditionedDiffusionPrepareBatch(sched, CovariateConditioner(), prediction_type=prediction_type)
    latent = torch.randn(2, 3, *spatial)
    batch = {"latent": latent, "gender": torch.tensor([0.0, 1.0]), "age": torch.tensor([0.3, 0.6]),
             "ventricular_vol": torch.tensor([0.2, 0.2]), "brain_vol": torch.tensor([0.7, 0.1])}
    images, target, args, kwargs = prep(batch, device="cpu")
    assert torch.equal(images, latent) and args == ()
    noise, t = kwargs["noise"], kwargs["timesteps"]
    expected = sched.get_velocity(latent, noise, t) if prediction_type == "v_prediction" else noise
    assert torch.allclose(target, expected)
    assert t.shape == (2,) and int(t.min()) >= 0 and int(t.max()) < 1000
    net = DiffusionModelUNet(spatial_dims=len(spatial), in_channels=7, out_channels=3, channels=(8, 8),
                             attention_levels=(False, True), num_head_channels=(0, 8), num_res_blocks=1,
                             norm_num_groups=8, with_conditioning=True, cross_attention_dim=4)
    out = ConditionedDiffusionInferer(sched)(images, net, **kwargs)
    noisy = sched.add_noise(latent, noise, t)
    cov = kwargs["condition"].vector[:, :, None, None] if len(spatial) == 2 else kwargs["condition"].vector[:, :, None, None, None]
    ref = net(x=torch.cat([noisy, cov.expand(-1, -1, *spatial)], 1), timesteps=t, context=kwargs["condition"].context)
    assert out.shape == latent.shape and torch.allclose(out, ref)


def test_prepare_batch_rejects_bad_prediction_type():
    from monai.networks.schedulers import DDPMScheduler

    from common.training.diffusion import ConditionedDiffusionPrepareBatch

    with pytest.raises(ValueError, match="prediction_type='sample'"):
        ConditionedDiffusionPrepareBatch(DDPMScheduler(1000), None, prediction_type="sample")


class _ToyEncoder(torch.nn.Module):
    """encode(x) -> (mu = 2x downsampled, sigma = 0.1): a frozen 'autoencoder' with a known latent."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(3.0))

    def encode(self, x):
        mu = self.scale * torch.nn.functional.avg_pool3d(x, 2)
        return mu, torch.full_like(mu, 0.1)


def test_latent_cache_scale_factor(tmp_path):
    from common.training.latents import LatentCacheDataset, compute_scale_factor
    from common.weights import save_weights

    torch.manual_seed(0)
    images = [torch.rand(1, 4, 4, 4) for _ in range(5)]
    data = [{"image": im, "age": 0.1 * i, "subject": f"s{i}"} for i, im in enumerate(images)]
    weights = tmp_path / "ae.safetensors"
    save_weights({"scale": torch.tensor(2.0)}, weights)  # the cache must load these, not use 3.0
    ds = LatentCacheDataset(data, transform=lambda d: d, autoencoder=_ToyEncoder(),
                            autoencoder_weights=str(weights), sample_posterior=False, seed=0)
    assert len(ds) == 5 and ds._mu is None  # lazy: nothing encoded yet
    item = ds[3]
    mus = torch.stack([2.0 * torch.nn.functional.avg_pool3d(im, 2) for im in images])
    assert ds.scale_factor == pytest.approx(1.0 / float(mus.std()), rel=1e-5)
    assert torch.allclose(item["latent"], mus[3] * ds.scale_factor, atol=1e-6)
    assert float(item["age"]) == pytest.approx(0.3) and item["subject"] == "s3"
    assert ds.latent_shape == (1, 2, 2, 2)
    with pytest.raises(ValueError, match="zero variance"):
        compute_scale_factor(torch.zeros(3, 4))


# ----------------------------------------------------------------------------------------- handlers
def _toy_engine(max_epochs: int, handlers):
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    data = [{"image": torch.randn(2, 2), "label": torch.randn(2, 1)} for _ in range(3)]
    trainer = SupervisedTrainer(device="cpu", max_epochs=max_epochs, train_data_loader=data, network=net,
                                optimizer=opt, loss_function=torch.nn.MSELoss(), train_handlers=handlers,
                                decollate=False)
    return trainer, net, opt


def test_checkpoint_resume_and_safetensors_export(tmp_path):
    from monai.handlers import CheckpointSaver

    from common.training.handlers import EngineProgress, ResumeFromLatest, SafetensorsExport
    from common.weights import read_metadata

    class Scale:
        scale_factor = 0.25

    ckpt = tmp_path / "ckpt"
    weights = tmp_path / "models" / "net.safetensors"

    def build(max_epochs):
        progress = EngineProgress()
        holder = {}
        trainer, net, opt = _toy_engine(max_epochs, [])
        save_dict = {"net": net, "opt": opt, "progress": progress}
        for h in (progress, ResumeFromLatest(str(ckpt), save_dict),
                  CheckpointSaver(str(ckpt), save_dict, file_prefix="toy", epoch_level=False, save_interval=2,
                                  n_saved=1, save_final=True, final_filename="toy_final.pt"),
                  SafetensorsExport(net, str(weights), metadata={"stage": "toy"}, scale_factor_from=Scale())):
            h.attach(trainer)
        holder.update(trainer=trainer, net=net)
        return holder

    first = build(2)
    first["trainer"].run()
    assert first["trainer"].state.iteration == 6
    meta = read_metadata(weights)
    assert meta["scale_factor"] == "0.25" and meta["stage"] == "toy" and meta["iteration"] == "6"
    w_after_first = first["net"].weight.detach().clone()
    # a new process with a larger budget resumes at iteration 6 with the saved weights, not from scratch
    second = build(3)
    seen = []
    from ignite.engine import Events

    second["trainer"].add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(
        (e.state.iteration, second["net"].weight.detach().clone())))
    second["trainer"].run()
    assert second["trainer"].state.iteration == 9
    assert seen[0][0] == 7 and torch.equal(seen[0][1], w_after_first)
    assert read_metadata(weights)["iteration"] == "9"


def test_init_weights_when_no_checkpoint_then_checkpoints_win(tmp_path):
    from monai.handlers import CheckpointSaver

    from common.training.handlers import EngineProgress, ResumeFromLatest, SafetensorsExport
    from common.weights import WeightsNotFoundError, read_metadata, save_weights

    init = tmp_path / "shipped.safetensors"
    _, net0, _ = _toy_engine(1, [])
    with torch.no_grad():
        net0.weight.fill_(0.5)
    save_weights(net0.state_dict(), init, metadata={"iteration": "39", "epoch": "13"})
    ckpt, weights = tmp_path / "ckpt", tmp_path / "out.safetensors"

    def build(max_epochs, init_weights):
        progress = EngineProgress()
        trainer, net, opt = _toy_engine(max_epochs, [])
        save_dict = {"net": net, "opt": opt, "progress": progress}
        resume = ResumeFromLatest(str(ckpt), save_dict, init_weights=str(init_weights), network=net)
        for h in (progress, resume, CheckpointSaver(str(ckpt), save_dict, file_prefix="toy", epoch_level=False,
                                                    save_interval=100, n_saved=1, save_final=True),
                  SafetensorsExport(net, str(weights))):
            h.attach(trainer)
        return trainer, net, resume

    trainer, net, resume = build(15, init)
    first = []
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: first.append((e.state.iteration, net.weight.detach().clone())))
    trainer.run()
    assert resume.loaded_from == str(init)
    assert first[0][0] == 40 and torch.all(first[0][1] == 0.5)  # the shipped weights, counters continued
    assert trainer.state.iteration == 45 and read_metadata(weights)["iteration"] == "45"  # 2 epochs x 3 iterations
    # a checkpoint now exists: it wins over init_weights
    trainer, _, resume = build(16, init)
    trainer.run()
    assert resume.loaded_from != str(init) and trainer.state.iteration == 48
    # a missing init file is a one-line error naming the path
    for f in ckpt.glob("*.pt"):
        f.unlink()
    trainer, _, _ = build(16, tmp_path / "missing.safetensors")
    with pytest.raises(WeightsNotFoundError, match="missing.safetensors: weights file not found") as err:
        trainer.run()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="init_weights needs the network"):
        ResumeFromLatest(str(ckpt), {}, init_weights=str(init))


def test_time_limit_stops_and_still_exports(tmp_path):
    from common.training.handlers import SafetensorsExport, TimeLimit

    trainer, net, _ = _toy_engine(1000, [])
    limit = TimeLimit(minutes=1e-9)
    limit.attach(trainer)
    SafetensorsExport(net, str(tmp_path / "w.safetensors")).attach(trainer)
    trainer.run()
    assert trainer.state.iteration == 1 and (tmp_path / "w.safetensors").is_file()


def test_load_datalist_errors(tmp_path):
    from common.training.data import load_datalist

    with pytest.raises(FileNotFoundError, match="python -m common.data make brain"):
        load_datalist(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_datalist(str(bad))
    empty = tmp_path / "empty.json"
    empty.write_text('{"training": []}')
    with pytest.raises(ValueError, match="no non-empty 'training'"):
        load_datalist(str(empty))
    ok = tmp_path / "sub" / "d.json"
    ok.parent.mkdir()
    ok.write_text('{"training": [{"image": "a.nii.gz", "age": 0.5}, {"image": "b.nii.gz", "age": 0.1}]}')
    with pytest.raises(FileNotFoundError, match=r"names 2 file\(s\) that do not exist, e.g. .*a.nii.gz: fix the paths"):
        load_datalist(str(ok))  # checked before training starts, not at the first batch
    for name in ("a.nii.gz", "b.nii.gz"):
        (ok.parent / name).write_bytes(b"")
    entries = load_datalist(str(ok), max_items=1)
    assert len(entries) == 1 and entries[0]["image"] == os.path.join(str(ok.parent), "a.nii.gz")


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, common.training, common.conditioning; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_truncated_newest_checkpoint_falls_back_to_the_one_before_and_says_so(tmp_path, capsys):
    """A crash while writing the newest checkpoint must not block resume: the one before it is used, announced."""
    import os

    from monai.handlers import CheckpointSaver

    from common.training.handlers import EngineProgress, ResumeFromLatest, TrainingError

    ckpt = tmp_path / "ckpt"

    def build(max_epochs):
        progress = EngineProgress()
        trainer, net, opt = _toy_engine(max_epochs, [])
        save_dict = {"net": net, "opt": opt, "progress": progress}
        resume = ResumeFromLatest(str(ckpt), save_dict)
        for h in (progress, resume, CheckpointSaver(str(ckpt), save_dict, file_prefix="toy", epoch_level=False,
                                                    save_interval=2, n_saved=3)):
            h.attach(trainer)
        return trainer, resume

    trainer, _ = build(2)
    trainer.run()  # 6 iterations: checkpoints at 2, 4, 6
    files = sorted(ckpt.glob("*.pt"), key=os.path.getmtime)
    assert len(files) == 3
    newest = files[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # cut short, as by a kill during the write
    capsys.readouterr()
    trainer, resume = build(3)
    trainer.run()
    out = capsys.readouterr().out
    assert resume.loaded_from == str(files[-2]) and f"checkpoint {newest} does not load" in out
    assert f"resumed from {files[-2]} at epoch " in out and out.rstrip().endswith("iteration 4")
    assert trainer.state.iteration > 4  # training went on from the fallback checkpoint
    for f in ckpt.glob("*.pt"):
        f.write_bytes(b"garbage")
    trainer, _ = build(4)
    with pytest.raises(TrainingError, match="no checkpoint in .* loads .*pass --resume false") as err:
        trainer.run()
    assert "\n" not in str(err.value)


def test_stage_handlers_announce_the_plan_and_the_time_to_go_and_leave_nothing_when_failing_at_start(tmp_path, capsys):
    """The start says iterations, checkpoints, export path and time limit; after 10 iterations the time to go.
    A run that fails at its start (missing init weights) leaves no checkpoint folder or TensorBoard file."""
    from common.training import stage_handlers
    from common.weights import WeightsNotFoundError

    trainer, net, opt = _toy_engine(4, [])  # 3 iterations per epoch: 12 in all
    for h in stage_handlers("toy", str(tmp_path / "runs"), net, {"net": net, "opt": opt},
                            str(tmp_path / "models" / "toy.safetensors"), log_interval=5, checkpoint_interval=100):
        h.attach(trainer)
    trainer.run()
    out = capsys.readouterr().out
    assert f"toy: iterations 0 -> 12 (4 epochs of 3); checkpoints in {tmp_path / 'runs' / 'toy' / 'checkpoints'}" in out
    assert f"weights exported to {tmp_path / 'models' / 'toy.safetensors'}" in out
    assert "toy: " in out and " s per iteration, about " in out and " min to go" in out
    assert list((tmp_path / "runs" / "toy" / "tensorboard").iterdir())

    trainer, net, opt = _toy_engine(1, [])
    for h in stage_handlers("bad", str(tmp_path / "runs2"), net, {"net": net, "opt": opt},
                            str(tmp_path / "models2" / "bad.safetensors"), init_weights=str(tmp_path / "none.safetensors")):
        h.attach(trainer)
    with pytest.raises(WeightsNotFoundError):
        trainer.run()
    assert not (tmp_path / "runs2").exists() and not (tmp_path / "models2").exists()
