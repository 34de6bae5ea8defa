"""Safe weight I/O: safetensors (atomic, with str->str metadata) and ``torch.load(weights_only=True)``.

Every failure is a :class:`WeightsError` with one line that names the file, the problem and the fix, so a
bundle run or CLI stops with a message a user can act on instead of a pickle or safetensors traceback.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Mapping

import torch

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SCALE_FACTOR_KEY = "scale_factor"
PREDICTION_TYPE_KEY = "prediction_type"


class WeightsError(ValueError):
    """A weights file is unusable (corrupt, wrong hash, wrong shapes, missing keys, missing metadata)."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """A weights file does not exist."""


def _one_line(exc: BaseException) -> str:
    """First line of an exception message, so errors stay one line."""
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights can be GBs)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"{p}: file not found; check the path or download the weights first")
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected_sha256: str) -> None:
    """Raise if the file's sha256 differs from ``expected_sha256`` (case-insensitive hex)."""
    expected = str(expected_sha256).strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise WeightsError(f"{path}: expected sha256 {expected_sha256!r} is not 64 hex characters; fix the index entry")
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(
            f"{path}: sha256 mismatch (expected {expected}, got {actual}); the file is corrupt or a different "
            "version: delete it and download again"
        )


def _check_metadata(metadata: Mapping | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise WeightsError(f"metadata must be a dict of str -> str, got {type(metadata).__name__}")
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise WeightsError(f"metadata must be str -> str; key {bad[0]!r} is not (convert values with str())")
    return dict(metadata)


def _prepare_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detach to contiguous CPU tensors; clone any that share storage (safetensors refuses shared memory)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise WeightsError(f"state_dict key {key!r} is not a string")
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor; save only tensors")
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = t
    return out


def save_weights(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Save a state dict as safetensors atomically (temp file + rename), with optional str->str metadata.

    Why atomic: a crash mid-write must never leave a truncated file where inference looks for weights.
    """
    from safetensors.torch import save_file

    p = Path(path)
    if p.suffix not in SAFETENSORS_SUFFIXES:
        raise WeightsError(f"{p}: weights are saved as safetensors; use a '.safetensors' file name")
    meta = _check_metadata(metadata)
    tensors = _prepare_tensors(state_dict)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta or None)
        from common.io.writers import current_umask

        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; exported weights get the usual mode
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Metadata of a safetensors file without loading its tensors (``{}`` for torch files)."""
    p = _existing(path)
    if p.suffix not in SAFETENSORS_SUFFIXES:
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise WeightsError(f"{p}: corrupt or truncated safetensors file ({_one_line(e)}); download it again") from e


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"{p}: weights file not found; check the path or download the weights first")
    return p


def load_weights(
    path: str | os.PathLike, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load ``(state_dict, metadata)`` from ``.safetensors`` or a torch file (``weights_only=True``), on CPU.

    Torch checkpoints that wrap the weights (``{"state_dict": ...}`` or ``{"model": ...}``) are unwrapped.
    """
    p = _existing(path)
    if expected_sha256:
        verify_sha256(p, expected_sha256)
    if p.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        metadata = read_metadata(p)
        try:
            return load_file(str(p), device="cpu"), metadata
        except Exception as e:
            raise WeightsError(f"{p}: corrupt or truncated safetensors file ({_one_line(e)}); download it again") from e
    if p.suffix not in TORCH_SUFFIXES:
        raise WeightsError(
            f"{p}: unknown weights format {p.suffix!r}; use .safetensors or one of {', '.join(TORCH_SUFFIXES)}"
        )
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(
            f"{p}: cannot be loaded safely with torch.load(weights_only=True) ({_one_line(e)}); the file is "
            "corrupt, truncated or holds pickled objects other than tensors"
        ) from e
    return _unwrap(obj, p), {}


def _unwrap(obj: object, p: Path) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside a torch checkpoint."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model", "model_state_dict", "net"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    raise WeightsError(f"{p}: holds no state dict of tensors (got {type(obj).__name__}); save module.state_dict()")


def check_state_dict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     strict: bool = True) -> None:
    """Raise one line naming the file and the first shape mismatch / missing / unexpected key."""
    own = module.state_dict()
    for key, value in state_dict.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"{path}: shape mismatch at '{key}': file has {tuple(value.shape)}, network expects "
                f"{tuple(own[key].shape)}; the network config does not match these weights"
            )
    if strict:
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing key(s), first '{missing[0]}'")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected key(s), first '{unexpected[0]}'")
            raise WeightsError(
                f"{path}: {'; '.join(parts)}; the weights belong to a different network config"
                " (or an old GenerativeModels checkpoint: use load_generative_models_checkpoint)"
            )


def load_into(
    module: torch.nn.Module, path: str | os.PathLike, strict: bool = True, expected_sha256: str | None = None
) -> dict[str, str]:
    """Load weights from ``path`` into ``module`` (checked first, so errors are one line); return the metadata."""
    state_dict, metadata = load_weights(path, expected_sha256=expected_sha256)
    check_state_dict(module, state_dict, path, strict=strict)
    module.load_state_dict(state_dict, strict=strict)
    return metadata


def read_scale_factor(path: str | os.PathLike) -> float:
    """The latent scale factor stored with the diffusion weights (never recomputed at inference)."""
    p = _existing(path)
    if p.suffix not in SAFETENSORS_SUFFIXES:
        raise WeightsError(f"{p}: the scale factor is stored in safetensors metadata; convert to .safetensors")
    raw = read_metadata(p).get(SCALE_FACTOR_KEY)
    if raw is None:
        raise WeightsError(
            f"{p}: no '{SCALE_FACTOR_KEY}' in the safetensors metadata; save the diffusion weights with "
            f"save_weights(..., metadata={{'{SCALE_FACTOR_KEY}': str(value)}}) or pass the scale factor explicitly"
        )
    try:
        value = float(raw)
    except ValueError as e:
        raise WeightsError(f"{p}: '{SCALE_FACTOR_KEY}' metadata {raw!r} is not a number; re-save the weights") from e
    if not math.isfinite(value) or value <= 0:
        raise WeightsError(f"{p}: '{SCALE_FACTOR_KEY}' is {raw!r}; it must be a finite positive number")
    return value


def check_prediction_type(path: str | os.PathLike, prediction_type: str) -> str:
    """``prediction_type`` if the diffusion weights at ``path`` were trained for it (their safetensors metadata),
    else a one-line WeightsError naming both and the override that fixes it.

    Why: a scheduler stepping with the wrong parameterisation (epsilon vs v_prediction) still produces images,
    just wrong ones; weights without the metadata (old ``.pth`` checkpoints) are taken at the config's word.
    """
    if not Path(path).is_file():  # the weights' loader reports a missing file (with its download hint)
        return prediction_type
    trained = read_metadata(path).get(PREDICTION_TYPE_KEY)
    if trained is not None and trained != prediction_type:
        raise WeightsError(
            f"{Path(path)}: the weights were trained with prediction_type {trained!r} but the config asks for "
            f"{prediction_type!r}; pass --prediction_type {trained}"
        )
    return prediction_type
