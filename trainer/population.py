"""The population engine: M = P trials × K folds of one network as one stacked model.

None of the searched regularization hyperparameters changes a tensor's shape, so the M models
are stacked along a leading axis and trained by batched kernels: each Linear layer is one
``torch.baddbmm`` over weights ``[M, in, out]``, and each convolution one grouped convolution
with M groups over the models' channels side by side (``[B, M·C, …]``, weights ``[M·out, C,
k…]``), which is M independent convolutions in one kernel. Per model m:

* data: its own fit/val/score rows (index gathers into one device copy of the data set) and
  its own standardization μ_m, σ_m, fitted on its fit rows;
* BatchNorm: batch statistics over its own valid rows (and, after a convolution, positions)
  and its own running statistics, ``running ← (1 − m_m)·running + m_m·batch`` with a momentum
  tensor;
* dropout: inverted, keep probability 1 − p_m, masks from ``trainer.rng`` keyed by the model's
  seed, so a model draws the same masks whatever its neighbours are;
* loss: its own mean over its batch; the population's loss is the *sum* over models, so each
  model's gradient is exactly its own (a mean would scale every gradient by 1/M);
* L1 λ₁_m·‖θ_m‖₁ in the loss; L2 λ_m coupled (g ← g + λθ) or decoupled (θ ← (1 − ηλ)θ);
* Adam or SGD written over the stacked tensors, step counts per model, updates masked for
  models that stopped, were pruned, diverged, or had no batch this step (zeroing a gradient
  would not do: Adam's moments would still move the weights);
* early stopping with its own patience; the best weights are kept by a masked copy.

Initial weights are those of ``build_model`` under the model's seed, and batch orders those of
``engine.batch_order``, so a model trained here matches the per-trial engine when dropout is
off, and a model's result does not depend on which population it trains in.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainer import rng
from trainer.config import TrialConfig
from trainer.datasets import Dataset
from trainer.diagnosis import diagnose_fold
from trainer.engine import CVResult, DivergedError, FoldResult, fold_seed
from trainer.models import count_parameters
from trainer.preprocessing import Standardizer
from trainer.regularizers import SPARSITY_THRESHOLD
from trainer.spec import Metric
from trainer.splits import Split

BN_EPS = 1e-5
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class Member:
    """One model of a population: a trial's configuration on one fold."""

    config: TrialConfig
    split: Split
    seed: int
    trial: int  # slot of the trial in the population
    fold: int


@dataclass
class HostView:
    """Per-row facts the step loop needs on the host (the device copies stay authoritative)."""

    active: list[bool]
    fit_len: list[int]
    lr: list[float]
    trial: list[int]

    def keep(self, rows: list[int]) -> None:
        for name in ("active", "fit_len", "lr", "trial"):
            values = getattr(self, name)
            setattr(self, name, [values[r] for r in rows])


def _padded(
    indices: Sequence[np.ndarray], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index lists of unequal length as ``[M, max]`` (padded with 0) and their lengths ``[M]``."""
    width = max(1, max(len(i) for i in indices))
    table = np.zeros((len(indices), width), dtype=np.int64)
    for m, index in enumerate(indices):
        table[m, : len(index)] = index
    lengths = torch.tensor([len(i) for i in indices], device=device)
    return torch.as_tensor(table, device=device), lengths


def _column(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def per_model(column: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-model value ``[M, …]`` shaped to broadcast against ``like`` ``[M, …]``."""
    return column.reshape(-1, *[1] * (like.dim() - 1))


class Population:
    """Train ``members`` (same architecture, batch size and optimizer) as one stacked model."""

    def __init__(
        self,
        dataset: Dataset,
        members: Sequence[Member],
        *,
        metric: Metric,
        device: torch.device | str = "cpu",
    ) -> None:
        first = members[0].config
        for member in members:
            c = member.config
            if (c.hidden, c.batch_size, c.optimizer, c.model, c.training) != (
                first.hidden,
                first.batch_size,
                first.optimizer,
                first.model,
                first.training,
            ):
                raise ValueError(
                    "a population shares architecture, batch size, optimizer and "
                    "training settings; group members by them"
                )
        self.members, self.metric, self.task = list(members), metric, dataset.task
        self.device = torch.device(device)
        self.training = first.training
        self.batch_size = first.batch_size
        self.batch_norm = first.model.batch_norm
        self.input_shape = dataset.input_shape
        self.conv = F.conv1d if len(dataset.input_shape) == 2 else F.conv2d
        self.stride, self.padding = first.model.stride, first.model.kernel_size // 2
        self.n_conv = len(first.model.channels) if first.model.kind == "cnn" else 0
        M, dev = len(members), self.device
        self.M = M

        # Data: one device copy; per-model standardization fitted on its fit rows only.
        self.X = torch.as_tensor(dataset.X, device=dev)
        x_scalers = [Standardizer.fit(dataset.X[m.split.fit]) for m in members]
        self.x_scalers = x_scalers
        self.x_mean = torch.as_tensor(
            np.stack([s.mean for s in x_scalers]), device=dev, dtype=torch.float32
        )[:, None, :]
        self.x_std = torch.as_tensor(
            np.stack([s.std for s in x_scalers]), device=dev, dtype=torch.float32
        )[:, None, :]
        if dataset.task == "regression":
            y_scalers = [Standardizer.fit(dataset.y[m.split.fit, None]) for m in members]
            self.y_mean = torch.tensor([float(s.mean[0]) for s in y_scalers], device=dev)
            self.y_std = torch.tensor([float(s.std[0]) for s in y_scalers], device=dev)
            self.baseline = [1.0] * M
        else:
            self.y_mean = self.y_std = torch.zeros(M, device=dev)
            self.baseline = []
            for m in members:
                prior = np.bincount(dataset.y[m.split.fit], minlength=dataset.n_outputs)
                prior = prior[prior > 0] / len(m.split.fit)
                self.baseline.append(float(-(prior * np.log(prior)).sum()))
        self.y = torch.as_tensor(dataset.y, device=dev)
        self.fit_index, self.fit_len = _padded([m.split.fit for m in members], dev)
        self.val_index, self.val_len = _padded([m.split.val for m in members], dev)
        self.score_index, self.score_len = _padded([m.split.score for m in members], dev)

        # Per-model hyperparameters as tensors.
        configs = [m.config for m in members]
        self.lr = _column([c.lr for c in configs], dev)
        self.weight_decay = _column([c.weight_decay for c in configs], dev)
        self.l1 = _column([c.l1 for c in configs], dev)
        self.keep = torch.tensor([1.0 - c.dropout for c in configs], device=dev)
        self.inverse_keep = 1.0 / self.keep.view(-1, 1, 1)
        self.bn_momentum = _column([c.bn_momentum for c in configs], dev)[:, :, 0]
        self.patience = torch.tensor([c.patience for c in configs], device=dev)
        self.seeds = torch.tensor([m.seed for m in members], device=dev)

        # Weights: each model exactly as build_model initializes it under its seed.
        self.weights: list[nn.Parameter] = []
        self.biases: list[nn.Parameter] = []
        self.gammas: list[nn.Parameter] = []
        self.betas: list[nn.Parameter] = []
        self.running: list[tuple[torch.Tensor, torch.Tensor]] = []
        models = []
        for member in members:
            torch.manual_seed(member.seed)
            models.append(member.config.network(dataset.input_shape, dataset.n_outputs))
        self.n_params = count_parameters(models[0])
        # Layers in forward order (a CNN's convolutions, then its head): weights [M, out, C, k…]
        # for a convolution, [M, in, out] for a Linear, biases [M, 1, out] for both.
        layer_types = (nn.Conv1d, nn.Conv2d, nn.Linear)
        norm_types = (nn.BatchNorm1d, nn.BatchNorm2d)
        linears = [[m for m in model.modules() if isinstance(m, layer_types)] for model in models]
        norms = [[m for m in model.modules() if isinstance(m, norm_types)] for model in models]
        for layer in range(len(linears[0])):
            conv = layer < self.n_conv
            w = torch.stack(
                [
                    ls[layer].weight.detach() if conv else ls[layer].weight.detach().t()
                    for ls in linears
                ]
            )
            b = torch.stack([ls[layer].bias.detach()[None, :] for ls in linears])
            self.weights.append(nn.Parameter(w.to(dev)))
            self.biases.append(nn.Parameter(b.to(dev)))
        for layer in range(len(norms[0])):
            self.gammas.append(
                nn.Parameter(
                    torch.stack([ns[layer].weight.detach()[None, :] for ns in norms]).to(dev)
                )
            )
            self.betas.append(
                nn.Parameter(
                    torch.stack([ns[layer].bias.detach()[None, :] for ns in norms]).to(dev)
                )
            )
            width = norms[0][layer].num_features
            self.running.append(
                (torch.zeros(M, width, device=dev), torch.ones(M, width, device=dev))
            )
        self.params = [*self.weights, *self.biases, *self.gammas, *self.betas]
        regularize_all = first.training.regularize_bias_and_bn
        self.regularized = self.params if regularize_all else self.weights
        ids = {id(p) for p in self.regularized}
        self.decayed = [id(p) in ids for p in self.params]
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
        self.steps = torch.zeros(M, device=dev)
        self.stepping = torch.zeros(M, dtype=torch.bool, device=dev)
        # Host copies of what the step loop branches on, so that it never waits for the device.
        self.host = HostView(
            active=[True] * M,
            fit_len=[len(m.split.fit) for m in members],
            lr=[c.lr for c in configs],
            trial=[m.trial for m in members],
        )
        self.uses_l1 = any(c.l1 > 0 for c in configs)
        self.uses_dropout = any(c.dropout > 0 for c in configs)

        # Per-model progress.
        self.active = torch.ones(M, dtype=torch.bool, device=dev)
        self.diverged = torch.zeros(M, dtype=torch.bool, device=dev)
        self.best_loss = torch.full((M,), math.inf, device=dev)
        self.best_epoch = torch.full((M,), -1, device=dev, dtype=torch.long)
        self.bad_epochs = torch.zeros(M, dtype=torch.long, device=dev)
        self.best_score = torch.full((M,), math.nan, device=dev)
        self.epochs = torch.zeros(M, dtype=torch.long, device=dev)
        self.best_params = [p.detach().clone() for p in self.params]
        # Rows of the stack → members; compaction drops finished rows, results stay by member.
        self.ids = torch.arange(M, device=dev)
        self.trial_ids = torch.tensor([m.trial for m in members], device=dev)
        self.regularize_all = regularize_all
        self.results: dict[int, FoldResult] = {}
        self.member_score = torch.full((M,), math.nan, device=dev)
        self.member_diverged = torch.zeros(M, dtype=torch.bool, device=dev)
        self.member_active = torch.ones(M, dtype=torch.bool, device=dev)
        self.best_running = [(a.clone(), b.clone()) for a, b in self.running]
        self.train_curves: list[list[float]] = [[] for _ in range(M)]
        self.val_curves: list[list[float]] = [[] for _ in range(M)]
        self.epoch = 0
        self.bind_rows()

    def bind_rows(self) -> None:
        """Per-model views of the stacked parameters and Adam state, for the fused optimizer."""
        self.param_rows = [p.detach().unbind(0) for p in self.params]
        self.moment_rows = [(m1.unbind(0), m2.unbind(0)) for m1, m2 in self.state]
        self.step_rows = self.steps.unbind(0)

    # --- the model -----------------------------------------------------------------------

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Standardized features of ``index`` ``[M, B]`` → ``[M, B, d]``, each model its own."""
        return (self.X[index] - self.x_mean) / self.x_std

    def convolve(self, h: torch.Tensor, layer: int) -> torch.Tensor:
        """Layer ``layer`` of every model at once: ``[M, B, C, …]`` → ``[M, B, out, …]``.

        The models' channels side by side make one input ``[B, M·C, …]``; a convolution with M
        groups convolves group m (model m's C channels) with model m's filters only.
        """
        M, B, C, *spatial = h.shape
        w = self.weights[layer]
        out = self.conv(
            h.transpose(0, 1).reshape(B, M * C, *spatial),
            w.flatten(0, 1),
            self.biases[layer].reshape(-1),
            stride=self.stride,
            padding=self.padding,
            groups=M,
        )
        return out.view(B, M, w.shape[1], *out.shape[2:]).transpose(0, 1)

    def normalize(
        self,
        h: torch.Tensor,
        layer: int,
        weight: torch.Tensor,
        count: torch.Tensor,
        *,
        train: bool,
        full: bool,
    ) -> torch.Tensor:
        """Per-model BatchNorm of ``h`` ``[M, B, C, …]`` over its valid rows and positions.

        ``weight`` ``[M, B]`` is 1 on real rows; ``count`` ``[M]`` how many there are.
        """
        M, _, C, *spatial = h.shape
        dims = (1, *range(3, h.dim()))
        shape = (M, 1, C, *[1] * len(spatial))  # per model and channel
        mean_run, var_run = self.running[layer]
        n = (count * math.prod(spatial)).view(M, *[1] * (h.dim() - 1))
        # Two-pass statistics: torch.var_mean over the middle axis is ~7× slower on CPU.
        if train and full:
            mean = h.mean(dims, keepdim=True)
            centred = h - mean
            var = (centred * centred).mean(dims, keepdim=True)
        elif train:
            rows = weight.view(*weight.shape, *[1] * (h.dim() - 2))
            mean = (h * rows).sum(dims, keepdim=True) / n
            centred = (h - mean) * rows
            var = (centred * centred).sum(dims, keepdim=True) / n
        if train:
            with torch.no_grad():
                # PyTorch keeps the unbiased batch variance in the running estimate.
                unbiased = var * n / (n - 1).clamp(min=1.0)
                m = self.bn_momentum * self.stepping[:, None].to(h.dtype)
                mean_run.mul_(1 - m).add_(m * mean.view(M, C))
                var_run.mul_(1 - m).add_(m * unbiased.view(M, C))
        else:
            mean, var = mean_run.view(shape), var_run.view(shape)
        gamma, beta = self.gammas[layer].view(shape), self.betas[layer].view(shape)
        return (h - mean) / torch.sqrt(var + BN_EPS) * gamma + beta

    def targets(self, index: torch.Tensor) -> torch.Tensor:
        y = self.y[index]
        if self.task == "regression":
            return ((y - self.y_mean[:, None]) / self.y_std[:, None])[..., None]
        return y

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        *,
        train: bool,
        step: int = 0,
        full: bool = False,
    ) -> torch.Tensor:
        """Outputs ``[M, B, out]``; ``valid`` ``[M, B]`` marks real rows (the rest is padding).

        ``full`` says that every row is real, which allows plain (unmasked) batch statistics.
        """
        weight = valid.to(x.dtype)
        count = weight.sum(1).clamp(min=1.0)
        h = x.view(*x.shape[:2], *self.input_shape) if self.n_conv else x
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if layer < self.n_conv:
                h = self.convolve(h, layer)
            else:
                h = torch.baddbmm(b, h.flatten(2), w)  # flatten: a CNN's features, as nn.Flatten
            if layer == last:
                break
            if self.batch_norm:
                h = self.normalize(h, layer, weight, count, train=train, full=full)
            h = F.relu(h)
            if train and self.uses_dropout:
                keep = rng.keep_mask(self.dropout_keys[step, layer], tuple(h.shape[1:]), self.keep)
                h = h * (keep * per_model(self.inverse_keep, h))
        return h

    def losses(
        self, outputs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """Per-model mean data loss over its valid rows: ``[M]``."""
        if self.task == "classification":
            per_row = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), reduction="none")
            per_row = per_row.view(valid.shape)
        else:
            per_row = ((outputs - targets) ** 2).mean(-1)
        weight = valid.to(per_row.dtype)
        return (per_row * weight).sum(1) / weight.sum(1).clamp(min=1.0)

    # --- training ------------------------------------------------------------------------

    def train_epoch(self) -> None:
        """One epoch for every active model, then validation, early stopping and scoring."""
        B, n_max = self.batch_size, self.fit_index.shape[1]
        epoch_key = rng.keys(self.seeds, self.epoch)
        order = rng.permutations(epoch_key, self.fit_len, n_max)
        if self.uses_dropout:  # a key per (step, layer, model), all drawn at once
            self.dropout_keys = rng.key_table(epoch_key, -(-n_max // B), len(self.weights) - 1)
        total = torch.zeros(self.M, device=self.device)
        seen = torch.zeros(self.M, device=self.device)
        minimum = 2 if self.batch_norm else 1
        for step, start in enumerate(range(0, n_max, B)):
            rows_host = [min(max(n - start, 0), B) for n in self.host.fit_len]
            # A model steps when it trains and has a batch here (BatchNorm needs two rows).
            active = self.host.active
            stepping = [a and r >= minimum for a, r in zip(active, rows_host, strict=True)]
            if not any(stepping):
                continue
            full = all(r == B for r in rows_host)
            position = order[:, start : start + B]
            valid = position < self.fit_len[:, None]
            index = self.fit_index.gather(1, position.clamp(max=n_max - 1))
            rows = valid.sum(1)
            self.stepping = torch.tensor(stepping, device=self.device)
            outputs = self.forward(self.rows(index), valid, train=True, step=step, full=full)
            loss = self.losses(outputs, self.targets(index), valid)
            for p in self.params:
                p.grad = None
            (loss * self.stepping).sum().backward()
            self.update(stepping)
            total += torch.where(self.stepping, loss.detach() * rows, 0.0)
            seen += torch.where(self.stepping, rows, 0).to(seen.dtype)
        self.finish_epoch(total / seen.clamp(min=1.0))

    @torch.no_grad()
    def update(self, stepping: list[bool]) -> None:
        """One optimizer step per stepping model, exactly as torch's Adam/SGD would take it.

        The L1 term's gradient λ₁·sign(θ) is added here rather than through autograd: the same
        number (torch's d|θ|/dθ is sign θ) for a fraction of the memory traffic.
        """
        go = self.stepping
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        if self.uses_l1:
            for p, g, decayed in zip(self.params, grads, self.decayed, strict=True):
                if decayed:
                    g.addcmul_(torch.sgn(p), per_model(self.l1, p))
        if self.training.grad_clip is not None:
            norm = torch.sqrt(sum(g.pow(2).flatten(1).sum(1) for g in grads))
            coef = (self.training.grad_clip / (norm + 1e-6)).clamp(max=1.0)
            grads = [g * coef.view(-1, *[1] * (g.dim() - 1)) for g in grads]
        self.steps += go.to(self.steps.dtype)
        decoupled = self.training.l2_mode == "decoupled"
        gate = go.to(torch.float32).view(-1, 1, 1)  # 1: step, 0: leave model and moments be
        lr = self.lr * gate
        adam = self.members[0].config.optimizer == "adam"
        for p, g, decayed in zip(self.params, grads, self.decayed, strict=True):
            if decayed and decoupled:
                p.mul_(1 - per_model(lr * self.weight_decay, p))
            elif decayed:
                g.addcmul_(p, per_model(self.weight_decay, p))
        if adam:
            self.adam_step(grads, stepping)
            return
        momentum = self.training.momentum
        for p, g, (m1, _) in zip(self.params, grads, self.state, strict=True):
            if momentum:
                m1.copy_(torch.where(per_model(gate, p).bool(), momentum * m1 + g, m1))
                g = m1
            p.sub_(per_model(lr, p) * g)

    def adam_step(self, grads: list[torch.Tensor], stepping: list[bool]) -> None:
        """torch's fused Adam over the rows of the stepping models, one call per learning rate.

        Each model's rows are views into the stacked tensors, with their own step count, so a
        model that does not step here is simply left out: its weights and moments stay put.
        """
        by_lr: dict[float, list[int]] = defaultdict(list)
        for row, go in enumerate(stepping):
            if go:
                by_lr[self.host.lr[row]].append(row)
        grad_rows = [g.unbind(0) for g in grads]
        b1, b2 = ADAM_BETAS
        for lr, rows in by_lr.items():
            lists: tuple[list[torch.Tensor], ...] = ([], [], [], [], [])
            for p_rows, g_rows, (m1_rows, m2_rows) in zip(
                self.param_rows, grad_rows, self.moment_rows, strict=True
            ):
                for row in rows:
                    lists[0].append(p_rows[row])
                    lists[1].append(g_rows[row])
                    lists[2].append(m1_rows[row])
                    lists[3].append(m2_rows[row])
                    lists[4].append(self.step_rows[row])
            params, grad_list, m1s, m2s, steps = lists
            torch._fused_adam_(
                params,
                grad_list,
                m1s,
                m2s,
                [],
                steps,
                lr=lr,
                beta1=b1,
                beta2=b2,
                weight_decay=0.0,
                eps=ADAM_EPS,
                amsgrad=False,
                maximize=False,
            )

    @torch.no_grad()
    def evaluate(
        self, index: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(data loss, objective) per model on its rows ``index`` in evaluation mode."""
        valid = torch.arange(index.shape[1], device=self.device)[None, :] < lengths[:, None]
        outputs = self.forward(self.rows(index), valid, train=False)
        targets = self.targets(index)
        loss = self.losses(outputs, targets, valid)
        if self.metric == "accuracy":
            hits = (outputs.argmax(-1) == targets) & valid
            metric = hits.sum(1) / lengths.clamp(min=1)
        elif self.metric == "mse":
            metric = loss * self.y_std**2
        else:
            metric = loss
        return loss, metric.to(torch.float32)

    @torch.no_grad()
    def finish_epoch(self, train_loss: torch.Tensor) -> None:
        val_loss, _ = self.evaluate(self.val_index, self.val_len)
        _, score = self.evaluate(self.score_index, self.score_len)
        was_active = self.active.clone()
        diverged = was_active & ~(torch.isfinite(train_loss) & torch.isfinite(val_loss))
        self.diverged |= diverged
        improved = was_active & ~diverged & (val_loss < self.best_loss - self.training.min_delta)
        self.best_loss = torch.where(improved, val_loss, self.best_loss)
        self.best_epoch = torch.where(improved, self.epochs, self.best_epoch)
        self.best_score = torch.where(improved, score, self.best_score)
        self.bad_epochs = torch.where(improved, 0, self.bad_epochs + was_active.long())
        for best, p in zip(self.best_params, self.params, strict=True):
            best.copy_(torch.where(improved.view(-1, *[1] * (p.dim() - 1)), p, best))
        for (best_mean, best_var), (mean, var) in zip(self.best_running, self.running, strict=True):
            best_mean.copy_(torch.where(improved[:, None], mean, best_mean))
            best_var.copy_(torch.where(improved[:, None], var, best_var))
        self.epochs += was_active.long()
        out_of_epochs = self.epochs >= self.training.max_epochs
        self.active = was_active & ~diverged & (self.bad_epochs < self.patience) & ~out_of_epochs
        # The epoch's one host synchronisation: curves for the record.
        rows = (train_loss, val_loss, was_active, self.ids, self.active)
        train_host, val_host, active_host, ids_host, self.host.active = (t.tolist() for t in rows)
        for r, member in enumerate(ids_host):
            if active_host[r]:
                self.train_curves[member].append(train_host[r])
                self.val_curves[member].append(val_host[r])
        self.sync_members()
        self.epoch += 1

    def sync_members(self) -> None:
        """Per-member views (by member, not by row) of score, divergence and activity."""
        self.member_score[self.ids] = self.best_score
        self.member_diverged[self.ids] = self.diverged
        self.member_active[self.ids] = self.active

    def stop_trial(self, trial: int) -> None:
        """Stop every model of this trial (pruned, or one of its folds diverged)."""
        self.active &= self.trial_ids != trial
        self.host.active = [
            a and t != trial for a, t in zip(self.host.active, self.host.trial, strict=True)
        ]
        self.sync_members()

    PER_ROW = (
        "x_mean",
        "x_std",
        "y_mean",
        "y_std",
        "fit_index",
        "fit_len",
        "val_index",
        "val_len",
        "score_index",
        "score_len",
        "lr",
        "weight_decay",
        "l1",
        "keep",
        "inverse_keep",
        "bn_momentum",
        "patience",
        "seeds",
        "steps",
        "stepping",
        "active",
        "diverged",
        "best_loss",
        "best_epoch",
        "bad_epochs",
        "best_score",
        "epochs",
        "ids",
        "trial_ids",
    )

    @torch.no_grad()
    def compact(self) -> None:
        """Drop the rows of finished models from every stacked tensor (their results are kept).

        A stopped model's update is masked but its compute is not: without this, a population
        whose models mostly stopped early costs as much per epoch as a full one.
        """
        keep = self.active.nonzero().flatten()
        self.host.keep([r for r, a in enumerate(self.host.active) if a])
        for row in (~self.active).nonzero().flatten().tolist():
            self.results[int(self.ids[row])] = self.fold_result(row)
        for name in self.PER_ROW:
            setattr(self, name, getattr(self, name)[keep])
        self.weights = [nn.Parameter(w.detach()[keep]) for w in self.weights]
        self.biases = [nn.Parameter(b.detach()[keep]) for b in self.biases]
        self.gammas = [nn.Parameter(g.detach()[keep]) for g in self.gammas]
        self.betas = [nn.Parameter(b.detach()[keep]) for b in self.betas]
        self.params = [*self.weights, *self.biases, *self.gammas, *self.betas]
        self.regularized = self.params if self.regularize_all else self.weights
        self.state = [(m1[keep], m2[keep]) for m1, m2 in self.state]
        self.best_params = [best[keep] for best in self.best_params]
        self.running = [(mean[keep], var[keep]) for mean, var in self.running]
        self.best_running = [(mean[keep], var[keep]) for mean, var in self.best_running]
        self.M = len(keep)
        self.bind_rows()

    def fold_results(self) -> dict[int, FoldResult]:
        """Every member's result by member index (call after training ends)."""
        for row in range(self.M):
            self.results[int(self.ids[row])] = self.fold_result(row)
        return self.results

    @torch.no_grad()
    def restore_best(self) -> None:
        for p, best in zip(self.params, self.best_params, strict=True):
            p.copy_(best)
        for (mean, var), (best_mean, best_var) in zip(self.running, self.best_running, strict=True):
            mean.copy_(best_mean)
            var.copy_(best_var)

    def sparsity(self, m: int) -> float:
        """Fraction of model m's regularized weights with |θ| < 1e-3 (as ``Regularizer``)."""
        chosen = [
            best[m] for best, decayed in zip(self.best_params, self.decayed, strict=True) if decayed
        ]
        small = sum(int((p.abs() < SPARSITY_THRESHOLD).sum()) for p in chosen)
        return small / sum(p.numel() for p in chosen)

    def fold_result(self, m: int) -> FoldResult:
        """The result of the model in row m of the stack."""
        member_id = int(self.ids[m])
        member = self.members[member_id]
        config = member.config
        return FoldResult(
            index=member.fold,
            score=float(self.best_score[m]),
            best_epoch=int(self.best_epoch[m]),
            epochs=int(self.epochs[m]),
            stopped_early=int(self.bad_epochs[m]) >= config.patience,
            train_loss=self.train_curves[member_id],
            val_loss=self.val_curves[member_id],
            sparsity=self.sparsity(m),
            diagnosis=diagnose_fold(
                self.train_curves[member_id],
                self.val_curves[member_id],
                max_epochs=config.training.max_epochs,
                baseline_loss=self.baseline[member_id],
            ),
            scored=member.split.score,
            x_scaler=self.x_scalers[member_id],
        )


TrialOutcome = CVResult | DivergedError | None  # None: pruned


def train_population(
    dataset: Dataset,
    configs: Sequence[TrialConfig],
    splits: Sequence[Split],
    *,
    seeds: Sequence[int],
    metric: Metric,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, int, float], bool] | None = None,
    compact_below: float = 0.5,
) -> list[TrialOutcome]:
    """Cross-validate every configuration at once; one outcome per configuration.

    ``on_epoch(trial, epoch, fold_mean)`` is called per active trial after every epoch;
    returning True prunes the trial (its models stop, its outcome is None). When the share of
    the stack still training falls to ``compact_below`` or less, finished rows are dropped.
    """
    start = time.perf_counter()
    members = [
        Member(config, split, fold_seed(seed, k), trial, k)
        for trial, (config, seed) in enumerate(zip(configs, seeds, strict=True))
        for k, split in enumerate(splits)
    ]
    population = Population(dataset, members, metric=metric, device=device)
    P, K = len(configs), len(splits)
    pruned = [False] * P
    while bool(population.member_active.any()):
        # Like the per-trial engine: a trial reports after every epoch in which it trained.
        reporting = population.member_active.view(P, K).any(1).tolist()
        population.train_epoch()
        failed = population.member_diverged.view(P, K).any(1).tolist()
        means = population.member_score.view(P, K).mean(1).tolist()
        for trial in range(P):
            if failed[trial]:  # a diverged fold fails the whole trial: stop its other folds
                population.stop_trial(trial)
            elif (
                on_epoch is not None
                and reporting[trial]
                and on_epoch(trial, population.epoch - 1, means[trial])
            ):
                pruned[trial] = True
                population.stop_trial(trial)
        still = int(population.active.sum())
        if 0 < still <= compact_below * population.M:
            population.compact()
    population.restore_best()
    results = population.fold_results()
    elapsed = time.perf_counter() - start
    failed = population.member_diverged.view(P, K).any(1).tolist()
    outcomes: list[TrialOutcome] = []
    for trial in range(P):
        if failed[trial]:
            outcomes.append(DivergedError(f"trial slot {trial} diverged (NaN/inf loss)"))
        elif pruned[trial]:
            outcomes.append(None)
        else:
            folds = [results[m] for m in range(trial * K, (trial + 1) * K)]
            outcomes.append(
                CVResult(
                    metric=metric, folds=folds, n_params=population.n_params, wall_time_s=elapsed
                )
            )
    return outcomes
