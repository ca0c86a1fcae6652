"""The population engine: P slots × K folds of one network as one stacked model.

None of the searched regularization hyperparameters changes a tensor's shape, so M = P·K
models are stacked along a leading axis and trained by batched kernels, each model exactly as
it would train alone. The stack is in parts: its rows (each model's fold of the data,
:mod:`.stacked_rows`), its layers (batched Linear, grouped convolutions, per-model
BatchNorm and keyed dropout, :mod:`.stacked_layers`, run in the order the traced
network gives, :mod:`.stacking`), its optimizer step (per-model L1, L2 and Adam or SGD,
:mod:`.stacked_optim`), and here the slots, the epoch loop and the results. Per model:

* loss: its own mean over its batch; the population's loss is the *sum* over models, so each
  model's gradient is exactly its own (a mean would scale every gradient by 1/M);
* early stopping with its own patience; the best weights are kept by a masked copy.

Slots are refilled: when a trial ends, :meth:`Population.assign` puts the next one in its
rows at the next epoch boundary, initialised exactly as its network alone under its seed. Shapes
never change, so the step can be compiled once (:mod:`trainer.engines.compiled`).

Inside an epoch nothing waits for the host. Batch orders, dropout keys and the per-step
"who steps" masks are device tensors made at the epoch's start, and which steps exist at all
is fixed by the folds' sizes; :meth:`Population.end_epoch` reads the epoch's results back in
one transfer.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainer import rng
from trainer.data.datasets import Dataset
from trainer.data.splits import Split
from trainer.engines import compiled, stacking
from trainer.engines.per_trial import CVResult, DivergedError, fold_seed
from trainer.engines.stacked_layers import ConvShape, Pass, StackedLayers, per_model
from trainer.engines.stacked_optim import (
    decay_decoupled,
    fused_adam_rows,
    regularized_gradients,
    stacked_update,
)
from trainer.engines.stacked_results import StackedResults
from trainer.engines.stacked_rows import StackedRows
from trainer.engines.trial_config import TrialConfig
from trainer.nets.networks import count_parameters
from trainer.specs.study_spec import Metric

ShapeKey = tuple[tuple[int, ...], int, str]


def shape_key(config: TrialConfig) -> ShapeKey:
    """What trials must share to train in one stack: widths, batch size and optimizer."""
    return (config.hidden, config.batch_size, config.optimizer)


@dataclass(frozen=True)
class SlotEpoch:
    """What one slot's trial did in the epoch that just ended (read on the host)."""

    slot: int
    epoch: int  # the trial's own epoch index, from 0
    value: float  # fold mean of the best-epoch scores so far: the value Optuna is told
    diverged: bool  # a fold's loss is NaN/inf: the trial fails
    finished: bool  # every fold stopped (early stopping or max_epochs)


class Population(StackedRows, StackedLayers, StackedResults):
    """``slots`` trials × K folds of ``template``'s network, batch size and optimizer.

    Every trial assigned must share :func:`shape_key` with ``template`` (and the study's
    model and training settings). Empty slots cost compute but change nothing.
    """

    def __init__(
        self,
        dataset: Dataset,
        splits: Sequence[Split],
        template: TrialConfig,
        *,
        slots: int,
        metric: Metric,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        self.template, self.metric, self.task = template, metric, dataset.task
        self.compiled = compile and compiled.available(torch.device(device))
        self.device = dev = torch.device(device)
        self.training = template.training
        self.batch_size = template.batch_size
        self.adam = template.optimizer == "adam"
        self.input_shape, self.n_outputs = dataset.input_shape, dataset.n_outputs
        # The network, traced once: what the stack holds and how a pass runs through it.
        torch.manual_seed(0)
        net = template.network(dataset.input_shape, dataset.n_outputs)
        self.program = stacking.program(net)  # Unstackable: the caller trains per trial
        self.has_norms = bool(self.program.norms)
        self.P, self.K = slots, len(splits)
        self.M = M = slots * self.K
        self.splits = list(splits)
        self.autocast = (
            torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        )

        fit_len = self.load_rows(dataset, splits, dev)
        # A row with no validation rows (a refit) trains its fixed epochs: each epoch's weights
        # replace the best, and patience never runs out.
        self.unvalidated = self.val_len == 0
        self.schedule(fit_len)

        # Per-model hyperparameters as tensors, written in place by assign().
        self.lr = torch.zeros(M, 1, 1, device=dev)
        self.weight_decay = torch.zeros(M, 1, 1, device=dev)
        self.l1 = torch.zeros(M, 1, 1, device=dev)
        # Keep probabilities per dropout group (row 0: dropouts without a group) and model.
        self.groups: list[str | None] = [None]
        for _, group, _ in self.program.dropouts:
            if group not in self.groups:
                self.groups.append(group)
        self.group_of = [self.groups.index(g) for _, g, _ in self.program.dropouts]
        self.keep = torch.ones(len(self.groups), M, device=dev)
        self.bn_momentum = torch.zeros(M, 1, device=dev)
        self.patience = torch.zeros(M, dtype=torch.long, device=dev)
        self.seeds = torch.zeros(M, dtype=torch.long, device=dev)

        # Weights: the template's layout, replicated; assign() loads each trial's own init.
        self.n_params = count_parameters(net)
        layers, norms = self.layer_modules(net), self.norm_modules(net)
        self.convs = [
            ConvShape(
                F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d,
                m.stride,
                m.padding,
                m.dilation,
            )
            if isinstance(m, nn.Conv1d | nn.Conv2d)
            else None
            for m in layers
        ]
        # Which stacked bias each layer adds (None: a layer without one).
        with_bias = [m.bias is not None for m in layers]
        self.bias_of = [sum(with_bias[:i]) if b else None for i, b in enumerate(with_bias)]
        self.eps = [float(m.eps) for m in norms]
        weights, biases = self.layer_tensors(net)
        self.weights = [nn.Parameter(w.to(dev)[None].repeat(M, *[1] * w.dim())) for w in weights]
        self.biases = [nn.Parameter(b.to(dev).repeat(M, 1, 1)) for b in biases]
        norm_weights = self.norm_tensors(net)
        self.gammas = [nn.Parameter(g.to(dev).repeat(M, 1, 1)) for g, _ in norm_weights]
        self.betas = [nn.Parameter(b.to(dev).repeat(M, 1, 1)) for _, b in norm_weights]
        self.running = [
            (torch.zeros(M, g.shape[-1], device=dev), torch.ones(M, g.shape[-1], device=dev))
            for g, _ in norm_weights
        ]
        self.params = [*self.weights, *self.biases, *self.gammas, *self.betas]
        regularized = self.params if self.training.regularize_bias_and_bn else self.weights
        ids = {id(p) for p in regularized}
        self.decayed = [id(p) in ids for p in self.params]
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.params]
        self.steps = torch.zeros(M, device=dev)  # float32, as the fused kernel takes them
        # torch's fused Adam over row views (one call per learning rate) is the fastest eager
        # CPU update; elsewhere the one-call stacked update (compiled, fused by inductor).
        self.fused = self.adam and dev.type == "cpu" and not self.compiled
        self.host_lr = [0.0] * M

        # Per-model progress; every row starts empty (inactive).
        self.active = torch.zeros(M, dtype=torch.bool, device=dev)
        self.diverged = torch.zeros(M, dtype=torch.bool, device=dev)
        self.best_loss = torch.full((M,), math.inf, device=dev)
        self.best_epoch = torch.full((M,), -1, device=dev, dtype=torch.long)
        self.bad_epochs = torch.zeros(M, dtype=torch.long, device=dev)
        self.best_score = torch.full((M,), math.nan, device=dev)
        self.epochs = torch.zeros(M, dtype=torch.long, device=dev)
        self.best_params = [p.detach().clone() for p in self.params]
        self.best_running = [(a.clone(), b.clone()) for a, b in self.running]

        # Host side: what each slot holds, and the curves for the record.
        self.occupant: list[TrialConfig | None] = [None] * slots
        self.started = [0.0] * slots
        self.slot_epochs = [0] * slots
        self.host_active = [False] * M
        self.train_curves: list[list[float]] = [[] for _ in range(M)]
        self.val_curves: list[list[float]] = [[] for _ in range(M)]
        self.refresh_flags()

    # --- layout --------------------------------------------------------------------------

    def layer_tensors(self, net: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A network's layers in call order, as stacked: a convolution's weight ``[out, C,
        k…]``, a Linear's ``[in, out]`` (transposed, for ``baddbmm``), every bias ``[1, out]``."""
        layers = self.layer_modules(net)
        weights = [
            (m.weight.t() if isinstance(m, nn.Linear) else m.weight).detach() for m in layers
        ]
        return weights, [m.bias.detach()[None, :] for m in layers if m.bias is not None]

    def norm_tensors(self, net: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (m.weight.detach()[None, :], m.bias.detach()[None, :]) for m in self.norm_modules(net)
        ]

    def schedule(self, fit_len: list[int]) -> None:
        """Which steps an epoch takes and who has a batch in each: fixed by the folds' sizes.

        Step s gives model m the rows ``s·B … s·B + B − 1`` of its shuffled fit rows; it
        steps when it has enough of them (BatchNorm needs two). ``full[s]``: every model has a
        whole batch, so batch statistics need no mask.
        """
        B = self.batch_size
        self.n_max = max(fit_len)
        minimum = 2 if self.has_norms else 1
        n_steps = -(-self.n_max // B)
        counts = np.array(
            [[min(max(n - s * B, 0), B) for n in fit_len] for s in range(n_steps)], dtype=np.int64
        ).reshape(n_steps, len(fit_len))
        self.step_list = [s for s in range(n_steps) if (counts[s] >= minimum).any()]
        self.full = [bool((counts[s] == B).all()) for s in range(n_steps)]
        self.has_batch_host = counts >= minimum  # [S, M]
        self.has_batch = torch.as_tensor(self.has_batch_host, device=self.device)
        self.n_steps = n_steps

    # --- slots ---------------------------------------------------------------------------

    def free_slots(self) -> list[int]:
        return [s for s, c in enumerate(self.occupant) if c is None]

    def occupied(self) -> int:
        return sum(c is not None for c in self.occupant)

    @torch.no_grad()
    def assign(
        self,
        slot: int,
        config: TrialConfig,
        seed: int,
        *,
        fold_seeds: Sequence[int] | None = None,
    ) -> None:
        """Put a trial in ``slot``: its K fold models initialised exactly as ``build_model``
        under ``fold_seed(seed, k)`` (or ``fold_seeds[k]``), fresh optimizer state, nothing
        trained yet."""
        if shape_key(config) != shape_key(self.template) or config.training != self.training:
            raise ValueError("a population shares widths, batch size, optimizer and training")
        if self.occupant[slot] is not None:
            raise ValueError(f"slot {slot} is taken")
        rows, dev = self.rows_of(slot), self.device
        seeds = list(fold_seeds or [fold_seed(seed, k) for k in range(self.K)])
        if len(seeds) != self.K:
            raise ValueError(f"{len(seeds)} fold seeds for {self.K} folds")
        nets = []
        for s in seeds:
            torch.manual_seed(s)
            nets.append(config.network(self.input_shape, self.n_outputs))
        layers = [self.layer_tensors(n) for n in nets]
        norms = [self.norm_tensors(n) for n in nets]
        for i, w in enumerate(self.weights):
            w[rows] = torch.stack([ws[i] for ws, _ in layers]).to(dev)
        for i, b in enumerate(self.biases):
            b[rows] = torch.stack([bs[i] for _, bs in layers]).to(dev)
        for i, (g, b) in enumerate(zip(self.gammas, self.betas, strict=True)):
            g[rows] = torch.stack([ns[i][0] for ns in norms]).to(dev)
            b[rows] = torch.stack([ns[i][1] for ns in norms]).to(dev)
        for (m1, m2), p, best in zip(self.moments, self.params, self.best_params, strict=True):
            m1[rows], m2[rows] = 0.0, 0.0
            best[rows] = p[rows]
        for (mean, var), (best_mean, best_var) in zip(self.running, self.best_running, strict=True):
            mean[rows], var[rows], best_mean[rows], best_var[rows] = 0.0, 1.0, 0.0, 1.0
        self.lr[rows] = config.lr
        self.host_lr[rows] = [config.lr] * self.K
        self.weight_decay[rows] = config.weight_decay
        self.l1[rows] = config.l1
        for index, group in enumerate(self.groups):
            self.keep[index, rows] = 1.0 - config.dropout_of(group)
        self.bn_momentum[rows] = config.bn_momentum
        self.patience[rows] = config.patience
        self.seeds[rows] = torch.tensor(seeds, device=dev)
        self.steps[rows] = 0.0
        self.active[rows], self.diverged[rows] = True, False
        self.best_loss[rows], self.best_epoch[rows], self.bad_epochs[rows] = math.inf, -1, 0
        self.best_score[rows], self.epochs[rows] = math.nan, 0
        self.occupant[slot] = config
        self.started[slot] = time.perf_counter()
        self.slot_epochs[slot] = 0
        for r in range(rows.start, rows.stop):
            self.host_active[r] = True
            self.train_curves[r], self.val_curves[r] = [], []
        self.refresh_flags()

    def release(self, slot: int) -> None:
        """Empty ``slot``: its models stop stepping (their compute stays, masked)."""
        self.stop(slot)
        self.occupant[slot] = None
        self.refresh_flags()

    def refresh_flags(self) -> None:
        """Skip the L1 and dropout work while no occupant needs it (eager only: a compiled
        step keeps one graph whoever is in the slots, a zero λ₁ and p = 0 change nothing)."""
        if self.compiled:
            self.uses_l1, self.uses_dropout = True, bool(self.program.dropouts)
            return
        configs = [c for c in self.occupant if c is not None]
        self.uses_l1 = any(c.l1 > 0 for c in configs)
        self.uses_dropout = any(
            c.dropout_of(group) > 0 for c in configs for _, group, _ in self.program.dropouts
        )

    # --- the model -----------------------------------------------------------------------

    def forward(
        self,
        x: torch.Tensor,
        valid: torch.Tensor,
        *,
        stepping: torch.Tensor | None = None,
        dropout_keys: torch.Tensor | None = None,
        full: bool = False,
    ) -> torch.Tensor:
        """Outputs ``[M, B, out]``; ``valid`` ``[M, B]`` marks real rows (the rest is padding).

        Training mode when ``stepping`` is given; ``dropout_keys`` ``[dropouts, M]`` draws the
        masks; ``full`` says that every row is real (plain, unmasked batch statistics).
        """
        context = Pass(valid.to(x.dtype), stepping, dropout_keys, full)
        return self.program.run(self, x, context).float()

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
        """One epoch for every active model, with no host synchronisation: every tensor the
        steps need is made here, on the device, from the models' seeds and own epochs."""
        B = self.batch_size
        epoch_key = rng.keys_at(self.seeds, self.epochs)
        order = rng.permutations(epoch_key, self.fit_len, self.n_max)
        # Padded to whole batches: positions past n_max are nobody's rows (masked as invalid).
        order = F.pad(order, (0, self.n_steps * B - self.n_max), value=self.n_max)
        stepping = self.has_batch & self.active[None, :]  # [S, M]
        # The same masks on the host (the folds' sizes and who is active are known there).
        stepping_host = self.has_batch_host & np.array(self.host_active)[None, :]
        keys = None
        if self.uses_dropout:  # a key per (step, layer, model), all drawn at once
            keys = rng.key_table(epoch_key, self.n_steps, len(self.program.dropouts))
        self.total = torch.zeros(self.M, device=self.device)
        self.seen = torch.zeros(self.M, device=self.device)
        for step in self.step_list:
            position = order[:, step * B : (step + 1) * B]
            self.step(
                position,
                stepping[step],
                None if keys is None else keys[step],
                full=self.full[step],
                rows=np.flatnonzero(stepping_host[step]),
            )

    def step(
        self,
        position: torch.Tensor,
        stepping: torch.Tensor,
        dropout_keys: torch.Tensor | None,
        *,
        full: bool,
        rows: np.ndarray,
    ) -> None:
        """One optimizer step of every model whose ``stepping`` is set (``rows`` on the host),
        on its ``position`` rows ``[M, B]`` of its shuffled fit rows."""
        batch_loss = compiled.step_loss(self.device) if self.compiled else step_loss
        loss, counts = batch_loss(self, position, stepping, dropout_keys, full)
        for p in self.params:
            p.grad = None
        (loss * stepping).sum().backward()
        self.update(stepping, rows)
        self.total += torch.where(stepping, loss.detach() * counts, 0.0)
        self.seen += torch.where(stepping, counts, 0).to(self.seen.dtype)

    @torch.no_grad()
    def update(self, stepping: torch.Tensor, rows: np.ndarray) -> None:
        """One optimizer step of the whole stack (:func:`stacked_update`); ``rows`` are the
        stepping models' rows as the host knows them (for the fused CPU kernel)."""
        params = [p.detach() for p in self.params]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        l1 = self.l1 if self.uses_l1 else None
        decoupled = self.training.l2_mode == "decoupled"
        if not self.fused:
            update = compiled.stacked_update(self.device) if self.compiled else stacked_update
            update(
                params,
                grads,
                self.moments,
                self.steps,
                stepping,
                lr=self.lr,
                weight_decay=self.weight_decay,
                l1=l1,
                decayed=self.decayed,
                adam=self.adam,
                decoupled=decoupled,
                momentum=self.training.momentum,
                grad_clip=self.training.grad_clip,
            )
            return
        grads = regularized_gradients(
            params,
            grads,
            weight_decay=self.weight_decay,
            l1=l1,
            decayed=self.decayed,
            decoupled=decoupled,
            grad_clip=self.training.grad_clip,
        )
        self.steps.add_(stepping.to(self.steps.dtype))
        if decoupled:
            decay_decoupled(
                params, stepping, lr=self.lr, weight_decay=self.weight_decay, decayed=self.decayed
            )
        by_lr: dict[float, list[int]] = defaultdict(list)
        for row in rows.tolist():
            by_lr[self.host_lr[row]].append(row)
        fused_adam_rows(by_lr, params, grads, self.moments, self.steps)

    @torch.no_grad()
    def evaluate(
        self, index: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(data loss, objective) per model on its rows ``index`` in evaluation mode."""
        valid = torch.arange(index.shape[1], device=self.device)[None, :] < lengths[:, None]
        with self.autocast:
            outputs = self.forward(self.features(index), valid)
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
    def end_epoch(self) -> list[SlotEpoch]:
        """Validation, early stopping and scoring for the epoch just trained, then its one host
        synchronisation: what each trial that trained did (:class:`SlotEpoch`)."""
        train_loss = self.total / self.seen.clamp(min=1.0)
        val_loss, _ = self.evaluate(self.val_index, self.val_len)
        _, score = self.evaluate(self.score_index, self.score_len)
        was_active = self.active.clone()
        diverged = was_active & ~(torch.isfinite(train_loss) & torch.isfinite(val_loss))
        self.diverged |= diverged
        better = (val_loss < self.best_loss - self.training.min_delta) | self.unvalidated
        improved = was_active & ~diverged & better
        self.best_loss = torch.where(improved, val_loss, self.best_loss)
        self.best_epoch = torch.where(improved, self.epochs, self.best_epoch)
        self.best_score = torch.where(improved, score, self.best_score)
        self.bad_epochs = torch.where(improved, 0, self.bad_epochs + was_active.long())
        for best, p in zip(self.best_params, self.params, strict=True):
            best.copy_(torch.where(per_model(improved, p), p, best))
        for (best_mean, best_var), (mean, var) in zip(self.best_running, self.running, strict=True):
            best_mean.copy_(torch.where(improved[:, None], mean, best_mean))
            best_var.copy_(torch.where(improved[:, None], var, best_var))
        self.epochs += was_active.long()
        out_of_epochs = self.epochs >= self.training.max_epochs
        self.active &= ~diverged & (self.bad_epochs < self.patience) & ~out_of_epochs
        # The epoch's one host synchronisation.
        table = torch.stack(
            [train_loss, val_loss, was_active, self.active, self.diverged, self.best_score]
        ).tolist()
        train_host, val_host, was_host, active_host, diverged_host, score_host = table
        reports = []
        for slot, config in enumerate(self.occupant):
            rows = range(slot * self.K, (slot + 1) * self.K)
            if config is None or not any(was_host[r] for r in rows):
                continue
            for r in rows:
                if was_host[r]:
                    self.train_curves[r].append(train_host[r])
                    self.val_curves[r].append(val_host[r])
                self.host_active[r] = bool(active_host[r])
            reports.append(
                SlotEpoch(
                    slot=slot,
                    epoch=self.slot_epochs[slot],
                    value=float(np.mean([score_host[r] for r in rows])),
                    diverged=any(diverged_host[r] for r in rows),
                    finished=not any(active_host[r] for r in rows),
                )
            )
            self.slot_epochs[slot] += 1
        return reports

    def stop(self, slot: int) -> None:
        """Stop every fold of ``slot``'s trial (pruned, or a fold diverged); it stays in the
        slot until released."""
        rows = self.rows_of(slot)
        self.active[rows] = False
        for r in range(rows.start, rows.stop):
            self.host_active[r] = False


def step_loss(
    population: Population,
    position: torch.Tensor,
    stepping: torch.Tensor,
    dropout_keys: torch.Tensor | None,
    full: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model training loss ``[M]`` on the batch at ``position`` and its row counts: the
    fixed-shape part of a step that :mod:`trainer.engines.compiled` compiles (backward included)."""
    p = population
    valid = position < p.fit_len[:, None]
    index = p.fit_index.gather(1, position.clamp(max=p.n_max - 1))
    with p.autocast:
        outputs = p.forward(
            p.features(index), valid, stepping=stepping, dropout_keys=dropout_keys, full=full
        )
    return p.losses(outputs, p.targets(index), valid), valid.sum(1)


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
    precision: str = "fp32",
    compile: bool = False,
) -> list[TrialOutcome]:
    """Cross-validate every configuration at once in one population; one outcome each.

    ``on_epoch(trial, epoch, fold_mean)`` is called per trial after every epoch in which it
    trained; returning True prunes it (its outcome is None). The search itself refills slots
    as trials end (:mod:`trainer.tuning.search`); this runs a fixed set, for tests and benchmarks.
    """
    population = Population(
        dataset,
        splits,
        configs[0],
        slots=len(configs),
        metric=metric,
        device=device,
        precision=precision,
        compile=compile,
    )
    for slot, (config, seed) in enumerate(zip(configs, seeds, strict=True)):
        population.assign(slot, config, seed)
    outcomes: list[TrialOutcome] = [None] * len(configs)
    running = set(range(len(configs)))
    while running:
        population.train_epoch()
        for report in population.end_epoch():
            slot = report.slot
            if report.diverged:
                outcomes[slot] = DivergedError(f"trial slot {slot} diverged (NaN/inf loss)")
            elif on_epoch is not None and on_epoch(slot, report.epoch, report.value):
                outcomes[slot] = None
            elif report.finished:
                outcomes[slot] = population.result(slot)
            else:
                continue
            population.stop(slot)
            running.discard(slot)
    return outcomes
