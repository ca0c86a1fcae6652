"""A trial's resolved configuration: every value fixed, nothing left to sample."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from trainer.engines.augmentation import Augmentation
from trainer.nets import networks
from trainer.specs.study_spec import ModelSpec, StudySpec, TrainingSpec


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
    groups: tuple[tuple[str, float], ...] = ()  # dropout groups' own p: (group, p)
    max_norm: float | None = None  # max-norm c of each unit's incoming weights; None: off
    augmentation: Augmentation = field(default_factory=Augmentation)  # each 0: off
    width: float | None = None  # a multiplier in (0, 1] on every hidden width; None: off

    @classmethod
    def from_values(cls, spec: StudySpec, values: dict[str, Any]) -> TrialConfig:
        """Combine sampled ``values`` with the spec's fixed settings (``dropout.<group>``:
        a group's p, else ``dropout``'s; ``dropout`` may be absent when every dropout has a
        group; ``max_norm`` absent: no max-norm constraint; ``width`` absent: the network's
        own widths)."""
        depth = len(values.get("hidden", spec.model.hidden))
        shared = values.get("dropout", 0.0)
        max_norm, width = values.get("max_norm"), values.get("width")
        groups = tuple(
            (g, float(values.get(f"dropout.{g}", shared))) for g in spec.model.groups(depth)
        )
        return cls(
            weight_decay=float(values["weight_decay"]),
            l1=float(values["l1"]),
            dropout=float(shared),
            bn_momentum=float(values["bn_momentum"]),
            patience=int(values["patience"]),
            lr=float(values.get("lr", spec.training.lr)),
            batch_size=int(values.get("batch_size", spec.training.batch_size)),
            optimizer=str(values.get("optimizer", spec.training.optimizer)),
            hidden=tuple(values.get("hidden", spec.model.hidden)),
            model=spec.model,
            training=spec.training,
            groups=groups,
            max_norm=None if max_norm is None else float(max_norm),
            augmentation=Augmentation.of(values),
            width=None if width is None else float(width),
        )

    def dropout_of(self, group: str | None) -> float:
        """The p of a dropout of ``group`` (None, or a group without its own p: ``dropout``)."""
        return dict(self.groups).get(group, self.dropout) if group is not None else self.dropout

    def hyperparameters(self) -> dict[str, Any]:
        """The values that vary between trials, JSON-ready."""
        values = asdict(self)
        del values["model"], values["training"], values["groups"], values["augmentation"]
        if not self.model.shares_dropout():
            del values["dropout"]  # every dropout has its group's p
        if self.max_norm is None:
            del values["max_norm"]  # off: recorded as before max-norm existed
        if self.width is None:
            del values["width"]  # off: recorded as before width existed
        if "hidden" in networks.TEMPLATE_FIELDS.get(self.model.kind, ()):
            values["hidden"] = list(self.hidden)
        else:  # a layers stack or a plugin has no template widths
            del values["hidden"]
        groups = {f"dropout.{g}": p for g, p in self.groups}
        return values | groups | self.augmentation.values()  # augment.<name>, those on

    def architecture(
        self, input_shape: tuple[int, ...], n_outputs: int
    ) -> tuple[ModelSpec, tuple[int, ...]]:
        """The network's spec and template widths, narrowed by ``width`` if it is set
        (:func:`trainer.nets.networks.narrowed`): what :meth:`network` builds and a model file
        records."""
        if self.width is None:
            return self.model, self.hidden
        model, hidden = networks.narrowed(
            self.model, self.width, input_shape, n_outputs, self.hidden
        )
        return model, tuple(hidden)

    def network(self, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
        """A fresh network of this configuration (its widths, scaled by ``width``, dropouts
        and BN momentum)."""
        model, hidden = self.architecture(input_shape, n_outputs)
        net = networks.build(model, input_shape, n_outputs, hidden=hidden)
        return networks.configure(net, dropout=self.dropout_of, bn_momentum=self.bn_momentum)
