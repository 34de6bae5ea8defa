"""Load old GenerativeModels (``monai-generative`` 0.2.x) checkpoints into MONAI 1.6 networks, strictly.

MONAI's own ``load_old_state_dict`` starts from the new net's freshly initialised weights and silently keeps any
key it cannot map, and it copies the old ``proj_attn`` into ``out_proj`` although the old self-attention block
(``AttentionBlock`` in the old AutoencoderKL / DiffusionModelUNet) never applied ``proj_attn`` in its forward.
Here every new key must come from the checkpoint and every checkpoint key must be used (or be one of those dead
``proj_attn`` weights), so a wrong ``include_fc`` / ``use_combined_linear`` is a one-line error, not a silently
different network. Which settings reproduce the old outputs was measured against monai-generative 0.2.3
(tests/test_old_checkpoints.py; numbers in docs/weights_and_schedulers.md).
"""

from __future__ import annotations

import os
from typing import Mapping

import torch

from .io import WeightsError, check_state_dict, load_weights

#: Suffix of old self-attention output projections that the old forward never used.
_DEAD_SUFFIXES = (".proj_attn.weight", ".proj_attn.bias")

#: Old-library network name -> the MONAI 1.6 kwargs that reproduce it (decided by measured outputs).
_LEGACY_KWARGS = {
    # old AttentionBlock ignores proj_attn -> no output projection in the new SABlock
    "AutoencoderKL": {"include_fc": False, "use_combined_linear": False},
    # unconditioned UNet uses the same old AttentionBlock (proj_attn unused)
    "DiffusionModelUNet": {"include_fc": False, "use_combined_linear": False},
    # cross-attention UNet / ControlNet use old CrossAttention whose to_out IS applied
    "DiffusionModelUNet+cross_attention": {"include_fc": True, "use_combined_linear": False},
    "ControlNet": {"include_fc": False, "use_combined_linear": False},
    "ControlNet+cross_attention": {"include_fc": True, "use_combined_linear": False},
    # old DecoderOnlyTransformer applies out_proj in self- and cross-attention
    "DecoderOnlyTransformer": {"include_fc": True, "use_combined_linear": False},
    "DecoderOnlyTransformer+cross_attention": {"include_fc": True, "use_combined_linear": False},
}


def legacy_net_kwargs(net: str, with_conditioning: bool = False) -> dict[str, bool]:
    """MONAI 1.6 ``include_fc`` / ``use_combined_linear`` that reproduce an old GenerativeModels net exactly.

    ``net`` is ``"AutoencoderKL"``, ``"DiffusionModelUNet"``, ``"ControlNet"`` or ``"DecoderOnlyTransformer"``;
    ``with_conditioning`` is the old net's cross-attention flag (``with_cross_attention`` for the transformer).
    ``use_combined_linear=True`` also loads exactly here (q/k/v are stacked), but MONAI's own
    ``load_old_state_dict`` gets it wrong, so False is the portable choice. VQVAE needs no kwargs (same keys).
    """
    key = f"{net}+cross_attention" if with_conditioning and net != "AutoencoderKL" else net
    if key not in _LEGACY_KWARGS:
        valid = sorted({k.split("+")[0] for k in _LEGACY_KWARGS})
        raise WeightsError(f"no legacy kwargs for net {net!r}; valid nets: {', '.join(valid)}")
    return dict(_LEGACY_KWARGS[key])


def _old_name_candidates(new_key: str, is_transformer: bool) -> list[str]:
    """Old-library names a MONAI 1.6 key may have had, most specific first."""
    if is_transformer:  # old DecoderOnlyTransformer: norm2 -> norm_cross_attn, norm3 -> norm2
        if "norm_cross_attn" in new_key:
            return [new_key.replace("norm_cross_attn", "norm2")]
        if ".norm2." in new_key:
            return [new_key.replace(".norm2.", ".norm3.")]
    cands = [new_key]
    if ".attn.to_" in new_key:  # old AttentionBlock held to_q/k/v directly
        cands.append(new_key.replace(".attn.to_", ".to_"))
    if ".attn.out_proj." in new_key:
        cands.append(new_key.replace(".attn.out_proj.", ".proj_attn."))
    if ".out_proj." in new_key:  # old CrossAttention: to_out = Sequential(Linear, Dropout)
        cands.append(new_key.replace(".out_proj.", ".to_out.0."))
    if "postconv" in new_key:  # upsampler conv renamed
        cands.append(new_key.replace("postconv", "conv"))
    return cands


def _combined_qkv(new_key: str, old: Mapping[str, torch.Tensor]) -> list[str] | None:
    """Old q/k/v keys that a combined ``qkv`` key (``use_combined_linear=True``) stacks, if all present."""
    if ".qkv." not in new_key:
        return None
    suffix = new_key.rsplit(".", 1)[1]
    prefixes = [new_key.rsplit(".qkv.", 1)[0]]
    if prefixes[0].endswith(".attn"):
        prefixes.append(prefixes[0][: -len(".attn")])
    for pre in prefixes:
        names = [f"{pre}.to_{x}.{suffix}" for x in "qkv"]
        if all(n in old for n in names):
            return names
    return None


def convert_generative_models_state_dict(
    module: torch.nn.Module, old: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Map an old GenerativeModels state dict onto ``module``'s keys; raise one line on anything unmatched."""
    own = module.state_dict()
    is_transformer = type(module).__name__ == "DecoderOnlyTransformer"
    used: set[str] = set()
    new: dict[str, torch.Tensor] = {}
    missing: list[str] = []
    for key in own:
        qkv = _combined_qkv(key, old)
        if qkv is not None:
            new[key] = torch.cat([old[n] for n in qkv], dim=0)
            used.update(qkv)
            continue
        src = next((c for c in _old_name_candidates(key, is_transformer) if c in old and c not in used), None)
        if src is None:
            missing.append(key)
            continue
        if src.endswith(_DEAD_SUFFIXES):
            raise WeightsError(
                f"{source}: '{src}' was never applied by the old network but would become '{key}'; "
                "build the MONAI net with include_fc=False (see common.weights.legacy_net_kwargs)"
            )
        new[key] = old[src]
        used.add(src)
    # MONAI's DecoderOnlyTransformer always holds norm_cross_attn; without cross-attention it is never applied
    dead_new = [k for k in missing if is_transformer and ".norm_cross_attn." in k
                and f"{k.split('.norm_cross_attn.')[0]}.cross_attn.to_q.weight" not in own]
    for key in dead_new:
        new[key] = own[key]
    missing = [k for k in missing if k not in dead_new]
    if missing:
        hint = ""
        if any(".out_proj." in k for k in missing):
            hint = " (try include_fc=False)"
        elif any(".qkv." in k or ".to_q." in k for k in missing):
            hint = " (check use_combined_linear)"
        raise WeightsError(
            f"{source}: {len(missing)} network key(s) not in the old checkpoint, first '{missing[0]}'{hint}; "
            "the checkpoint belongs to a different architecture"
        )
    leftover = [k for k in old if k not in used and not k.endswith(_DEAD_SUFFIXES)]
    if leftover:
        proj = (".to_out.", ".out_proj.")
        hint = " (the old net applied this projection: build with include_fc=True)" if any(
            p in leftover[0] for p in proj) else ""
        raise WeightsError(
            f"{source}: {len(leftover)} checkpoint key(s) unused by the network, first '{leftover[0]}'{hint}; "
            "the network config does not match the checkpoint"
        )
    check_state_dict(module, new, source, strict=True)
    return new


def load_generative_models_checkpoint(
    module: torch.nn.Module, path: str | os.PathLike, expected_sha256: str | None = None
) -> torch.nn.Module:
    """Load an old GenerativeModels ``.pth`` (``weights_only=True``) into a MONAI 1.6 net, strictly; return it."""
    old, _ = load_weights(path, expected_sha256=expected_sha256)
    module.load_state_dict(convert_generative_models_state_dict(module, old, source=str(path)), strict=True)
    return module


def build_legacy_net(
    net: str, checkpoint: str | os.PathLike | None = None, expected_sha256: str | None = None, **net_kwargs
) -> torch.nn.Module:
    """Build ``monai.networks.nets.<net>`` with the kwargs that reproduce the old library, optionally loading
    an old checkpoint strictly. For bundle configs: ``{"_target_": "common.weights.build_legacy_net",
    "net": "DiffusionModelUNet", "checkpoint": "...", ...}``; explicit ``include_fc`` etc. in ``net_kwargs`` win.
    """
    from monai.networks import nets

    cls = getattr(nets, net, None)
    if cls is None or net not in {k.split("+")[0] for k in _LEGACY_KWARGS} | {"VQVAE"}:
        valid = sorted({k.split("+")[0] for k in _LEGACY_KWARGS} | {"VQVAE"})
        raise WeightsError(f"no legacy support for net {net!r}; valid nets: {', '.join(valid)}")
    kwargs = {}
    if net != "VQVAE":
        cond = bool(net_kwargs.get("with_conditioning", net_kwargs.get("with_cross_attention", False)))
        kwargs = legacy_net_kwargs(net, with_conditioning=cond)
    kwargs.update(net_kwargs)
    module = cls(**kwargs)
    if checkpoint is not None:
        load_generative_models_checkpoint(module, checkpoint, expected_sha256=expected_sha256)
    return module
