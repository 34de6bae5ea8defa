"""Published weights that live outside this repo: the MONAI GenerativeModels model-zoo checkpoints.

The URLs are those of the GenerativeModels repository's ``large_files.yml`` files
(Project-MONAI/GenerativeModels, ``model-zoo/models/<bundle>/large_files.yml``): the brain LDM at commit
996c31a586dc990164755adbc67fc7fc7b8cbd16, the CXR LDM at 988ade37d6de4082d0ff8914915c000021cddec4. Both
leave ``hash_val`` empty, so their sha256 is recorded as unknown (``None``), never invented: downloading
them needs ``--allow-unknown-hash`` and prints the sha256 obtained, which a maintainer can then record.
The md5 values (``hash_type`` / ``hash_val``, checked too when present) are the MONAI model-zoo's for the
same Google Drive files: the brain LDM's from Project-MONAI/model-zoo ``models/brain_image_synthesis_
latent_diffusion_model/large_files.yml`` (commit 17e7879cb1b464912fdc47c8cff6a5497f7cdc36), the CXR LDM's
from the model-zoo pull-request fork virginiafdez/model-zoo (commit 13da7b1d70b5497738730633b5f4a256a1151112),
the values this repo's ``bundles/cxr_text_ldm/large_files.yml`` also carries.

The index is the source of truth: a bundle's ``large_files.yml`` puts these rows in
``model_zoo_index.json`` (``published_weights``). This table fills in rows the index lacks, so a checkout
whose bundles do not list them yet still finds the paper's weights by name; ``large_files_yaml`` prints
the block a bundle's ``large_files.yml`` needs.
"""

from __future__ import annotations

from typing import Any

GENERATIVE_MODELS_REPO = "https://github.com/Project-MONAI/GenerativeModels"

PUBLISHED_WEIGHTS: dict[str, list[dict[str, Any]]] = {
    # brain_image_synthesis_latent_diffusion_model (3D T1 brain LDM, UK Biobank; Pinaya et al. 2022)
    "brain_ldm_3d": [
        {
            "path": "models/paper/autoencoder.pth",
            "url": "https://drive.google.com/uc?export=download&id=1CZHwxHJWybOsDavipD0EorDPOo_mzNeX",
            "sha256": None,
            "size": None,
            "config": "configs/paper.json",
            "hash_type": "md5",
            "hash_val": "329e97b3085643ff235f11f049856242",
        },
        {
            "path": "models/paper/diffusion_model.pth",
            "url": "https://drive.google.com/uc?export=download&id=1XO-ak93ZuOcGTCpgRtqgIeZq3dG5ExN6",
            "sha256": None,
            "size": None,
            "config": "configs/paper.json",
            "hash_type": "md5",
            "hash_val": "21c3047556fb671caf0556f1cce6ef22",
        },
    ],
    # cxr_image_synthesis_latent_diffusion_model (2D chest X-ray LDM, MIMIC-CXR reports)
    "cxr_text_ldm": [
        {
            "path": "models/paper/autoencoder.pth",
            "url": "https://drive.google.com/uc?export=download&id=1paDN1m-Q_Oy8d_BanPkRTi3RlNB_Sv_h",
            "sha256": None,
            "size": None,
            "config": "configs/paper.json",
            "hash_type": "md5",
            "hash_val": "7f579cb789597db7bb5de1488f54bc6c",
        },
        {
            "path": "models/paper/diffusion_model.pth",
            "url": "https://drive.google.com/uc?export=download&id=1CjcmiPu5_QWr-f7wDJsXrCCcVeczneGT",
            "sha256": None,
            "size": None,
            "config": "configs/paper.json",
            "hash_type": "md5",
            "hash_val": "c3fd4c8e38cd1d7250a8903cca935823",
        },
    ],
}


def published_weights(name: str, entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The bundle's published-weight rows: the index's, completed by this table for paths it lacks."""
    rows = [dict(r) for r in ((entry or {}).get("published_weights") or [])]
    have = {r.get("path") for r in rows}
    rows += [dict(r) for r in PUBLISHED_WEIGHTS.get(name, []) if r["path"] not in have]
    return sorted(rows, key=lambda r: r["path"])


def large_files_yaml(name: str) -> str:
    """The ``large_files.yml`` text (MONAI format) that lists a bundle's published weights."""
    lines = ["large_files:"]
    for row in PUBLISHED_WEIGHTS.get(name, []):
        lines += [
            f'  - path: "{row["path"]}"',
            f'    url: "{row["url"]}"',
            f'    hash_val: "{row["sha256"] or row.get("hash_val") or ""}"',
            f'    hash_type: "{"sha256" if row["sha256"] else row.get("hash_type") or ""}"',
        ]
    return "\n".join(lines) + "\n"
