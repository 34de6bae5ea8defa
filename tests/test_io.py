"""common.io writers: NIfTI keeps values and affine, PNG round-trips through MONAI's LoadImage, bad input fails
with a clear message and leaves no file."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from common.io import atomic_path, write_json, write_nifti, write_png


def test_nifti_3d_channel_first_tensor_keeps_affine_and_values(tmp_path):
    vol = torch.rand(1, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    aff = np.array([[-1.2, 0, 0, 90], [0, 1.2, 0, -126], [0, 0, 1.5, -72], [0, 0, 0, 1]])
    p = write_nifti(vol, tmp_path / "v.nii.gz", aff)
    img = nib.load(p)
    assert img.shape == (5, 6, 7) and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, aff, atol=1e-6)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), vol[0].numpy())
    assert [x.name for x in tmp_path.iterdir()] == ["v.nii.gz"]


def test_nifti_2d_and_multichannel(tmp_path):
    img2 = nib.load(write_nifti(np.ones((1, 4, 3)), tmp_path / "a.nii", np.diag([0.5, 0.7, 1, 1])))
    assert img2.shape == (4, 3) and np.allclose(img2.header.get_zooms()[:2], (0.5, 0.7))
    img4 = nib.load(write_nifti(np.zeros((2, 3, 4, 5)), tmp_path / "b.nii.gz"))
    assert img4.shape == (3, 4, 5, 2) and np.allclose(img4.affine, np.eye(4))


def test_png_round_trips_through_monai_loadimage(tmp_path):
    from monai.transforms import LoadImage

    arr = np.linspace(0, 1, 12 * 7, dtype=np.float32).reshape(1, 12, 7)  # MONAI layout: [C, x(width), y(height)]
    p = write_png(arr, tmp_path / "x.png")
    back = LoadImage(image_only=True)(str(p))
    assert tuple(back.shape) == (12, 7)
    np.testing.assert_allclose(np.asarray(back) / 255.0, arr[0], atol=0.5 / 255 + 1e-6)
    assert Image.open(p).size == (12, 7)  # PIL size is (width, height)
    rows = write_png(arr[0].T, tmp_path / "r.png", spatial_order="yx")  # same picture given rows first
    np.testing.assert_array_equal(np.asarray(Image.open(rows)), np.asarray(Image.open(p)))
    p16 = write_png(arr, tmp_path / "y.png", bits=16)
    assert np.asarray(Image.open(p16)).max() == 65535


def test_png_non_square_is_what_loadimage_reads(tmp_path):
    """The PNG layout is [W, H]: an array written loads back equal through MONAI's LoadImage (8 and 16 bit)."""
    from monai.transforms import LoadImage

    rng = np.random.default_rng(0)
    for bits, dtype in ((8, np.uint8), (16, np.uint16)):
        arr = rng.integers(0, 2**bits, size=(13, 5), dtype=dtype)  # 13 wide, 5 high
        p = write_png(arr, tmp_path / f"a{bits}.png", bits=bits)
        assert Image.open(p).size == (13, 5)
        np.testing.assert_array_equal(np.asarray(LoadImage(image_only=True)(str(p))), arr)


def test_written_files_honour_the_umask_and_repeat_bytes(tmp_path):
    old = os.umask(0o022)
    try:
        files = [write_png(np.zeros((4, 3), np.uint8), tmp_path / "a.png"),
                 write_nifti(np.ones((3, 4, 5)), tmp_path / "a.nii.gz", np.eye(4)),
                 write_json({"a": 1}, tmp_path / "a.json")]
        assert [oct(f.stat().st_mode & 0o777) for f in files] == ["0o644"] * 3
        os.umask(0o027)
        assert oct(write_json({"a": 1}, tmp_path / "b.json").stat().st_mode & 0o777) == "0o640"
    finally:
        os.umask(old)
    first = (tmp_path / "a.nii.gz").read_bytes()
    assert write_nifti(np.ones((3, 4, 5)), tmp_path / "a.nii.gz", np.eye(4)).read_bytes() == first  # gzip mtime 0
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": 1}


def test_nifti_keeps_dtype_when_asked(tmp_path):
    labels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    img = nib.load(write_nifti(labels, tmp_path / "s.nii.gz", np.eye(4), dtype=None))
    assert img.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(img.dataobj), labels)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda d: write_png(np.full((4, 4), 1.5), d / "a.png"), r"\[0, 1\]"),
        (lambda d: write_png(np.full((4, 4), np.nan), d / "a.png"), "NaN"),
        (lambda d: write_png(np.zeros((2, 4, 4)), d / "a.png"), "C 1 or 3"),
        (lambda d: write_png(np.zeros((4, 4)), d / "a.jpg"), ".png"),
        (lambda d: write_nifti(np.zeros((4, 4, 4)), d / "a.nii.gz", np.zeros((4, 4))), "invertible"),
        (lambda d: write_nifti(np.zeros((4, 4, 4)), d / "a.nrrd"), ".nii"),
        (lambda d: write_nifti(np.zeros(4), d / "a.nii.gz"), "spatial"),
        (lambda d: write_nifti(np.zeros((4, 4)), d / "missing" / "a.nii.gz"), "does not exist"),
    ],
)
def test_bad_input_clear_error_and_no_file(tmp_path, call, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "keep.nii.gz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]
