"""The shipped bundles give the same samples through the shared core as before it (pinned from the pre-core
sampler, commit 834e04b, max difference < 1e-5): guided and unguided, DDIM and DPM-Solver++, 2D and 3D, batched.
The cxr_text_ldm pins were renewed on 2026-12-03 with its retrained weights (0.2.0; the sampling code unchanged)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# (bundle, overrides, file index, voxel indices, pinned values, pinned mean)
PINS = [
    ("brain_ldm_3d", {"scheduler": "dpmpp2m", "num_inference_steps": 4, "guidance_scale": 2.0, "seed": 1}, 0,
     [(40, 56, 40), (30, 70, 45), (50, 40, 30), (20, 60, 50)], [0.5431309, 0.7634883, 0.5651271, 0.7792212], 0.296898),
    ("cxr_text_ldm", {"num_inference_steps": 5, "num_samples": 3, "batch_size": 2, "seed": 2, "output_format": "nifti"}, 1,
     [(64, 64), (30, 90), (100, 20), (70, 110)], [0.8137722, 0.8213601, 0.3715054, 0.8376508], 0.595219),
    ("cxr_text_ldm", {"scheduler": "dpmpp2m", "num_inference_steps": 4, "guidance_scale": 1.0, "seed": 5,
                      "prompt": "Small left pleural effusion.", "output_format": "nifti"}, 0,
     [(64, 64), (30, 90), (100, 20), (70, 110)], [0.8346032, 0.5398492, 0.3296808, 0.8549914], 0.5920327),
]


@pytest.mark.parametrize("bundle, overrides, index, voxels, values, mean", PINS,
                         ids=["brain-dpmpp2m-guided", "cxr-ddim-batched", "cxr-dpmpp2m-unguided"])
def test_shipped_bundles_sample_as_pinned(tmp_path, bundle, overrides, index, voxels, values, mean):
    from monai.bundle import run

    root = REPO / "bundles" / bundle
    run(config_file=str(root / "configs" / "inference.json"), bundle_root=str(root), output_dir=str(tmp_path),
        progress=False, device="cpu", logging_file=None, **overrides)
    files = sorted(tmp_path.glob("*.nii.gz"))
    image = np.asarray(nib.load(str(files[index])).dataobj).astype(np.float64)
    got = [float(image[v]) for v in voxels]
    assert np.max(np.abs(np.array(got) - np.array(values))) < 1e-5, got
    assert abs(float(image.mean()) - mean) < 1e-5
