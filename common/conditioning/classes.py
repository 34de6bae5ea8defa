"""Class names -> `Condition(class_labels=...)`, with label dropout to a null class for guidance.

A fixed set of a few classes (mammography masking level, OCT diagnosis) fits the UNet's class embedding
(`DiffusionModelUNet(num_class_embeds=len(class_names) + 1)`) better than a text encoder. Label i is class
`class_names[i]`; label `len(class_names)` is the null class that label dropout trains and guidance uses
(MONAI's inferers use a -1 fill instead, which is not a trained input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from common.conditioning.base import Condition, ConditionError, drop_mask
from common.sampling.settings import check_num_samples

__all__ = ["ClassConditioner"]


class ClassConditioner:
    """Implements `common.conditioning.base.Conditioner` for class labels.

    Args:
        class_names: the classes in label order (names are matched case-insensitively).
        key: the batch key holding each entry's class, as an integer label or as a name.
        label_dropout: probability of replacing a training label by the null class.
    """

    def __init__(self, class_names: Sequence[str], key: str = "label", label_dropout: float = 0.1) -> None:
        names = [str(n) for n in class_names]
        if not names:
            raise ValueError("ClassConditioner needs at least one class name")
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"class names must differ (case-insensitively): {names}")
        if not 0.0 <= float(label_dropout) <= 1.0:
            raise ValueError(f"label_dropout must be in [0, 1] (got {label_dropout}); 0.1 is the usual value")
        self.class_names = names
        self.key = key
        self.label_dropout = float(label_dropout)

    @property
    def null_label(self) -> int:
        """The label of the null (unconditional) class."""
        return len(self.class_names)

    @property
    def num_class_embeds(self) -> int:
        """What the UNet's `num_class_embeds` must be: every class plus the null class."""
        return len(self.class_names) + 1

    def label_of(self, name: Any) -> int:
        """The label of a class name (any case) or of an integer label; a one-line error lists the valid names."""
        if isinstance(name, torch.Tensor):
            name = name.item()
        if isinstance(name, float) and name.is_integer():
            name = int(name)  # labels carried through a float tensor (the latent cache stores numbers as float)
        if isinstance(name, int) and not isinstance(name, bool):
            label = name
            if 0 <= label < len(self.class_names):
                return label
            raise ConditionError(f"class label {label} is outside 0..{len(self.class_names) - 1} ({'|'.join(self.class_names)})")
        lowered = [n.lower() for n in self.class_names]
        text = str(name).strip().lower()
        if text not in lowered:
            raise ConditionError(
                f"unknown class {name!r}: use --class with one of {'|'.join(n.lower() for n in self.class_names)}"
                " (any case; a list such as \"['" + lowered[0] + "','" + lowered[-1] + "']\" samples several)"
            )
        return lowered.index(text)

    def labels_of(self, classes: Any) -> list[int]:
        """The labels of a class name or label, or of a list of them (validated)."""
        items = [classes] if isinstance(classes, (str, int)) else list(classes)
        if not items:
            raise ConditionError("no class given: pass --class with one of " + "|".join(self.class_names))
        return [self.label_of(c) for c in items]

    def names_of(self, classes: Any) -> list[str]:
        """The canonical names of a class name or a list of them (validated)."""
        return [self.class_names[label] for label in self.labels_of(classes)]

    def from_batch(self, batch: Mapping[str, Any], train: bool = True) -> Condition:
        """Labels of a collated batch (`key` holds labels or names); label dropout only when `train`."""
        if self.key not in batch:
            raise ConditionError(f"batch has no {self.key!r} (keys: {sorted(batch)}); set the conditioner's key")
        values = batch[self.key]
        if isinstance(values, torch.Tensor):
            values = values.reshape(-1).tolist()
        elif isinstance(values, (str, int)):
            values = [values]
        labels = torch.tensor([self.label_of(v) for v in values], dtype=torch.long)
        if train:
            labels[drop_mask(len(labels), self.label_dropout)] = self.null_label
        return Condition(class_labels=labels)

    def from_values(self, num_samples: int = 1, classes: Any = None) -> Condition:
        """One class shared by every sample (batch 1), or one class per sample (a list of num_samples)."""
        num_samples = check_num_samples(num_samples)
        if classes is None:
            raise ConditionError("missing class: pass --class with one of " + "|".join(self.class_names))
        labels = self.labels_of(classes)
        if len(labels) not in (1, num_samples):
            raise ConditionError(f"{len(labels)} classes for num_samples={num_samples}: give one class or one per sample")
        return Condition(class_labels=torch.tensor(labels, dtype=torch.long))

    def null(self, num_samples: int = 1) -> Condition:
        """The null class for `num_samples` samples."""
        return Condition(class_labels=torch.full((int(num_samples),), self.null_label, dtype=torch.long))


def repeat_classes(class_names: Sequence[str], classes: Any, num_samples: int) -> list[str]:
    """The class of every sample of a run: each requested class (a name, any case, or a list of names) repeated
    `num_samples` times, in canonical spelling. A wrong name is a one-line error listing the valid ones."""
    num_samples = check_num_samples(num_samples)
    names = ClassConditioner(class_names, label_dropout=0.0).names_of(classes)
    return [name for name in names for _ in range(num_samples)]
