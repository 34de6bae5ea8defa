"""common.weights: safetensors round trip with metadata, atomic writes, sha256, one-line errors naming the file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.weights import (
    WeightsError,
    WeightsNotFoundError,
    check_prediction_type,
    load_into,
    load_weights,
    read_metadata,
    read_scale_factor,
    save_weights,
    sha256_file,
)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.Linear(4, 2))


def _one_line(exc: pytest.ExceptionInfo, path: Path) -> str:
    text = str(exc.value)
    assert "\n" not in text and str(path) in text
    return text


def test_safetensors_round_trip_with_metadata(tmp_path):
    net, path = _net(), tmp_path / "sub" / "unet.safetensors"
    save_weights(net.state_dict(), path, metadata={"scale_factor": "0.8731", "bundle": "brain_ldm_3d"})
    assert os.listdir(path.parent) == ["unet.safetensors"]  # no temp file left behind
    other = _net()
    with torch.no_grad():
        for p in other.parameters():
            p.zero_()
    meta = load_into(other, path)
    assert meta == {"scale_factor": "0.8731", "bundle": "brain_ldm_3d"}
    for (k, a), (_, b) in zip(net.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k
    assert read_scale_factor(path) == pytest.approx(0.8731)
    assert read_metadata(path)["bundle"] == "brain_ldm_3d"


def test_save_handles_shared_and_noncontiguous_tensors(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    sd = {"a": base, "tied": base, "t": base.t()}
    save_weights(sd, tmp_path / "w.safetensors")
    loaded, meta = load_weights(tmp_path / "w.safetensors")
    assert meta == {} and torch.equal(loaded["tied"], base) and torch.equal(loaded["t"], base.t())


def test_bad_save_writes_nothing(tmp_path):
    with pytest.raises(WeightsError, match="str -> str; key 'scale_factor'"):
        save_weights(_net().state_dict(), tmp_path / "w.safetensors", metadata={"scale_factor": 0.5})
    with pytest.raises(WeightsError, match="use a '.safetensors' file name"):
        save_weights(_net().state_dict(), tmp_path / "w.pt")
    with pytest.raises(WeightsError, match="not a tensor"):
        save_weights({"x": 1.0}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_on_failure(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights({"x": torch.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(WeightsError):
        save_weights({"x": "oops"}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["w.safetensors"]


def test_torch_checkpoints_load_weights_only(tmp_path):
    net = _net()
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    torch.save({"state_dict": net.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    for name in ("plain.pth", "wrapped.pt"):
        other = _net()
        torch.nn.init.zeros_(other[0].weight)
        assert load_into(other, tmp_path / name) == {}
        assert torch.equal(other[0].weight, net[0].weight)


class _Evil:  # a pickled object that weights_only=True must refuse
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(1), "x": _Evil()}, path)
    with pytest.raises(WeightsError, match="weights_only=True") as info:
        load_weights(path)
    _one_line(info, path)


def test_sha256(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights({"x": torch.arange(5.0)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path) == digest
    loaded, _ = load_weights(path, expected_sha256=digest.upper())
    assert torch.equal(loaded["x"], torch.arange(5.0))
    with pytest.raises(WeightsError, match=f"sha256 mismatch \\(expected {'0' * 64}, got {digest}\\)") as info:
        load_into(torch.nn.Module(), path, expected_sha256="0" * 64)
    _one_line(info, path)
    with pytest.raises(WeightsError, match="not 64 hex characters"):
        load_weights(path, expected_sha256="abc")


def test_wrong_shape_names_first_key_and_both_shapes(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(_net().state_dict(), path)
    wrong = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.GroupNorm(2, 4), torch.nn.Linear(4, 2))
    with pytest.raises(WeightsError) as info:
        load_into(wrong, path)
    text = _one_line(info, path)
    assert "shape mismatch at '0.weight': file has (4, 1, 3, 3), network expects (4, 1, 5, 5)" in text


def test_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(_net().state_dict(), path)
    bigger = torch.nn.Sequential(*_net(), torch.nn.Linear(2, 2))
    with pytest.raises(WeightsError, match="2 missing key\\(s\\), first '3.weight'") as info:
        load_into(bigger, path)
    _one_line(info, path)
    smaller = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3))
    with pytest.raises(WeightsError, match="4 unexpected key\\(s\\), first '1.bias'"):
        load_into(smaller, path)
    assert load_into(smaller, path, strict=False) == {}  # non-strict loads the matching part


def test_corrupt_truncated_and_missing_files(tmp_path):
    good = tmp_path / "w.safetensors"
    save_weights(_net().state_dict(), good)
    data = good.read_bytes()
    for name, blob in [("trunc.safetensors", data[: len(data) // 2]), ("junk.safetensors", b"\x00" * 7)]:
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(WeightsError, match="corrupt or truncated") as info:
            load_into(_net(), tmp_path / name)
        _one_line(info, tmp_path / name)
    torch.save(_net().state_dict(), tmp_path / "w.pth")
    (tmp_path / "trunc.pth").write_bytes((tmp_path / "w.pth").read_bytes()[:200])
    with pytest.raises(WeightsError, match="corrupt, truncated") as info:
        load_into(_net(), tmp_path / "trunc.pth")
    _one_line(info, tmp_path / "trunc.pth")
    with pytest.raises(WeightsNotFoundError, match="not found") as info:
        load_into(_net(), tmp_path / "nope.safetensors")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(WeightsError, match="unknown weights format '.npz'"):
        (tmp_path / "w.npz").write_bytes(b"x")
        load_weights(tmp_path / "w.npz")


def test_scale_factor_must_travel_with_the_weights(tmp_path):
    plain = tmp_path / "unet.safetensors"
    save_weights({"x": torch.ones(1)}, plain, metadata={"other": "1"})
    with pytest.raises(WeightsError, match="no 'scale_factor' in the safetensors metadata") as info:
        read_scale_factor(plain)
    _one_line(info, plain)
    for bad in ("abc", "nan", "-1", "0"):
        path = tmp_path / f"bad_{bad}.safetensors"
        save_weights({"x": torch.ones(1)}, path, metadata={"scale_factor": bad})
        with pytest.raises(WeightsError, match="scale_factor"):
            read_scale_factor(path)
    torch.save({"x": torch.ones(1)}, tmp_path / "unet.pt")
    with pytest.raises(WeightsError, match="convert to .safetensors"):
        read_scale_factor(tmp_path / "unet.pt")


def test_prediction_type_must_match_the_weights(tmp_path):
    v = tmp_path / "v.safetensors"
    save_weights({"x": torch.ones(1)}, v, metadata={"prediction_type": "v_prediction", "scale_factor": "1.0"})
    assert check_prediction_type(v, "v_prediction") == "v_prediction"
    with pytest.raises(WeightsError) as info:
        check_prediction_type(v, "epsilon")
    assert str(info.value).endswith(
        "the weights were trained with prediction_type 'v_prediction' but the config asks for 'epsilon'; "
        "pass --prediction_type v_prediction")
    _one_line(info, v)
    plain = tmp_path / "plain.safetensors"  # no metadata, an old .pth, a missing file: the config's word stands
    save_weights({"x": torch.ones(1)}, plain)
    torch.save({"x": torch.ones(1)}, tmp_path / "old.pth")
    for p in (plain, tmp_path / "old.pth", tmp_path / "missing.safetensors"):
        assert check_prediction_type(p, "epsilon") == "epsilon"


def test_import_is_light():
    code = "import sys, common.weights as w; assert 'torch' not in sys.modules; assert 'load_into' in dir(w)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_saved_weights_honour_the_umask(tmp_path):
    import os

    import torch

    from common.weights import save_weights

    old = os.umask(0o022)
    try:
        path = save_weights({"w": torch.zeros(2)}, tmp_path / "w.safetensors")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0600
