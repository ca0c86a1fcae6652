"""What a stack's trials come to: each fold as its own module, each trial's CV result.

Read from the best epoch of each model (weights and BatchNorm statistics kept by early
stopping) and the curves the host recorded, for a trial that has finished its folds.
"""

from __future__ import annotations

import time
from typing import cast

import torch
from torch import nn

from trainer.data.preprocessing import Standardizer
from trainer.data.splits import Split
from trainer.data.tabular import TableEncoder
from trainer.engines import stacking
from trainer.engines.diagnosis import diagnose_fold
from trainer.engines.per_trial import CVResult, FoldResult
from trainer.engines.regularizers import SPARSITY_THRESHOLD
from trainer.engines.stacked_layers import NormLayer, WeightLayer
from trainer.engines.trial_config import TrialConfig
from trainer.specs.study_spec import Metric, TrainingSpec


class StackedResults:
    """The results half of the population (mixed in); it reads the stack's state."""

    program: stacking.Program
    K: int
    metric: Metric
    training: TrainingSpec
    device: torch.device
    input_shape: tuple[int, ...]
    n_outputs: int
    n_params: int
    occupant: list[TrialConfig | None]
    started: list[float]
    splits: list[Split]
    params: list[nn.Parameter]
    best_params: list[torch.Tensor]
    decayed: list[bool]
    weights: list[nn.Parameter]
    biases: list[nn.Parameter]
    bias_of: list[int | None]
    gammas: list[nn.Parameter]
    betas: list[nn.Parameter]
    best_running: list[tuple[torch.Tensor, torch.Tensor]]
    best_score: torch.Tensor
    best_epoch: torch.Tensor
    epochs: torch.Tensor
    bad_epochs: torch.Tensor
    patience: torch.Tensor
    train_curves: list[list[float]]
    val_curves: list[list[float]]
    baseline: list[float]
    x_scalers: list[Standardizer]
    encoders: list[TableEncoder | None]

    def rows_of(self, slot: int) -> slice:
        return slice(slot * self.K, (slot + 1) * self.K)

    def layer_modules(self, net: nn.Module) -> list[WeightLayer]:
        """A network of the template's structure: its Linear and Conv layers in call order."""
        return [cast(WeightLayer, net.get_submodule(name)) for name in self.program.layers]

    def norm_modules(self, net: nn.Module) -> list[NormLayer]:
        return [cast(NormLayer, net.get_submodule(name)) for name in self.program.norms]

    @torch.no_grad()
    def module(self, slot: int, fold: int) -> nn.Module:
        """Fold ``fold`` of ``slot``'s trial as its own ``nn.Module`` (evaluation mode), with
        its best weights and running statistics: the inverse of :meth:`assign`'s layout."""
        config = self.occupant[slot]
        assert config is not None
        row = slot * self.K + fold
        net = config.network(self.input_shape, self.n_outputs).to(self.device)
        best = dict(zip(map(id, self.params), self.best_params, strict=True))
        for i, (layer, w) in enumerate(zip(self.layer_modules(net), self.weights, strict=True)):
            weight = best[id(w)][row]
            layer.weight.copy_(weight.t() if isinstance(layer, nn.Linear) else weight)
            if (bias := self.bias_of[i]) is not None and layer.bias is not None:
                layer.bias.copy_(best[id(self.biases[bias])][row, 0])
        for norm, g, b, (mean, var) in zip(
            self.norm_modules(net), self.gammas, self.betas, self.best_running, strict=True
        ):
            # The program admits only affine BatchNorms with running statistics.
            assert norm.running_mean is not None and norm.running_var is not None
            norm.weight.copy_(best[id(g)][row, 0])
            norm.bias.copy_(best[id(b)][row, 0])
            norm.running_mean.copy_(mean[row])
            norm.running_var.copy_(var[row])
        return net.eval()

    @torch.no_grad()
    def result(self, slot: int) -> CVResult:
        """The cross-validation result of ``slot``'s trial, from its folds' best epochs."""
        config = self.occupant[slot]
        assert config is not None
        rows = self.rows_of(slot)
        chosen = [
            best[rows]
            for best, decayed in zip(self.best_params, self.decayed, strict=True)
            if decayed
        ]
        small = torch.stack([(p.abs() < SPARSITY_THRESHOLD).flatten(1).sum(1) for p in chosen]).sum(
            0
        )
        total = sum(p[0].numel() for p in chosen)
        table = torch.stack(
            [
                self.best_score[rows].double(),
                self.best_epoch[rows].double(),
                self.epochs[rows].double(),
                (self.bad_epochs[rows] >= self.patience[rows]).double(),
                small.double() / total,
            ]
        ).tolist()
        scores, best_epochs, epochs, stopped, sparsity = table
        folds = []
        for k, r in enumerate(range(rows.start, rows.stop)):
            folds.append(
                FoldResult(
                    index=k,
                    score=scores[k],
                    best_epoch=int(best_epochs[k]),
                    epochs=int(epochs[k]),
                    stopped_early=bool(stopped[k]),
                    train_loss=self.train_curves[r],
                    val_loss=self.val_curves[r],
                    sparsity=sparsity[k],
                    diagnosis=diagnose_fold(
                        self.train_curves[r],
                        self.val_curves[r],
                        max_epochs=self.training.max_epochs,
                        baseline_loss=self.baseline[k],
                    ),
                    scored=self.splits[k].score,
                    x_scaler=self.x_scalers[k],
                    encoder=self.encoders[k],
                )
            )
        return CVResult(
            metric=self.metric,
            folds=folds,
            n_params=self.n_params,
            wall_time_s=time.perf_counter() - self.started[slot],
        )
