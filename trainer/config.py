"""A trial's resolved configuration: every value fixed, nothing left to sample."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from trainer.models import build_model
from trainer.spec import ModelSpec, StudySpec, TrainingSpec


@dataclass(frozen=True)
class TrialConfig:
    """The five regularization hyperparameters, the searched training settings, and the rest."""

    weight_decay: float
    l1: float
    dropout: float
    bn_momentum: float
    patience: int
    lr: float
    batch_size: int
    optimizer: str
    hidden: tuple[int, ...]
    model: ModelSpec
    training: TrainingSpec

    @classmethod
    def from_values(cls, spec: StudySpec, values: dict[str, Any]) -> TrialConfig:
        """Combine sampled ``values`` with the spec's fixed settings."""
        return cls(
            weight_decay=float(values["weight_decay"]),
            l1=float(values["l1"]),
            dropout=float(values["dropout"]),
            bn_momentum=float(values["bn_momentum"]),
            patience=int(values["patience"]),
            lr=float(values.get("lr", spec.training.lr)),
            batch_size=int(values.get("batch_size", spec.training.batch_size)),
            optimizer=str(values.get("optimizer", spec.training.optimizer)),
            hidden=tuple(values.get("hidden", spec.model.hidden)),
            model=spec.model,
            training=spec.training,
        )

    def hyperparameters(self) -> dict[str, Any]:
        """The values that vary between trials, JSON-ready."""
        values = asdict(self)
        del values["model"], values["training"]
        values["hidden"] = list(self.hidden)
        return values

    def network(self, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
        """A fresh network of this configuration (its widths, dropout and BN momentum)."""
        return build_model(
            self.model,
            input_shape,
            n_outputs,
            dropout=self.dropout,
            bn_momentum=self.bn_momentum,
            hidden=self.hidden,
        )
