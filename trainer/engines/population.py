"""The population engine: P slots × K folds of one network as one stacked model.

None of the searched regularization hyperparameters changes a tensor's shape, so M = P·K
models are stacked along a leading axis and trained by batched kernels, each model exactly as
it would train alone. The population holds its parts, each owning its own state: its rows
(each model's fold of the data and the epoch's steps, :mod:`.stacked_rows`), its layers (the
weights by name, batched Linear, grouped convolutions, per-model BatchNorm and keyed dropout,
:mod:`.stacked_layers`, run in the order the traced network gives, :mod:`.stacking`), its
optimizer (per-model L1, L2 and Adam or SGD, :mod:`.stacked_optim`) and its record (early
stopping, scores, curves and results, :mod:`.stacked_results`); here are the slots and the epoch
loop. Per model:

* loss (:mod:`.scoring`, as the per-trial engine's): its own mean over its batch; the
  population's loss is the *sum* over models, so each model's gradient is exactly its own (a
  mean would scale every gradient by 1/M);
* early stopping with its own patience; the best weights are kept by a masked copy.

Slots are refilled: when a trial ends, :meth:`Population.assign` puts the next one in its
rows at the next epoch boundary, initialised exactly as its network alone under its seed. Shapes
never change, so the step can be compiled once (:mod:`trainer.engines.compiled`).

Inside an epoch nothing waits for the host. Batch orders, dropout and augmentation keys and the
per-step "who steps" masks are device tensors made at the epoch's start, and which steps exist
at all is fixed by the folds' sizes; :meth:`Population.end_epoch` reads the epoch's results
back in one transfer. A trial's data augmentation (:mod:`.augmentation`, per model, off unless
some occupant has it) runs on its training batches only, eagerly before a compiled step.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import rng
from trainer.data.datasets import Dataset
from trainer.data.splits import Split
from trainer.engines import augmentation, compiled, scoring, stacking
from trainer.engines.folds import TrainedFold, fold_seed
from trainer.engines.layout import EVAL_ROWS
from trainer.engines.regularizers import nonzero, regularized_names, sparsity
from trainer.engines.results import CVResult, DivergedError
from trainer.engines.stacked_layers import Pass, StackedLayers
from trainer.engines.stacked_optim import StackedOptimizer
from trainer.engines.stacked_results import StackedResults
from trainer.engines.stacked_rows import StackedRows
from trainer.engines.trial_config import TrialConfig
from trainer.nets.networks import count_parameters
from trainer.specs.study_spec import Metric

ShapeKey = tuple[tuple[int, ...], int, str]


@functools.cache
def bf16_autocast(device_type: str) -> torch.autocast:
    """One bf16 autocast context per device type, shared by every population: a compiled
    step guards on the context object it runs under, so a new object per population would
    recompile the step for each one. (Each population enters it one ``with`` at a time.)"""
    return torch.autocast(device_type, dtype=torch.bfloat16)


def shape_key(config: TrialConfig) -> ShapeKey:
    """What trials must share to train in one stack: widths, batch size and optimizer (the
    template's widths: a trial's ``width`` narrows its network inside the widest stack)."""
    return (config.hidden, config.batch_size, config.optimizer)


@dataclass(frozen=True)
class SlotEpoch:
    """What one slot's trial did in the epoch that just ended (read on the host)."""

    slot: int
    epoch: int  # the trial's own epoch index, from 0
    value: float  # fold mean of the best-epoch scores so far: the value Optuna is told
    diverged: bool  # a fold's loss is NaN/inf: the trial fails
    finished: bool  # every fold stopped (early stopping or max_epochs)


class Population:
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
        self.device = dev = torch.device(device)
        self.compiled = compile and compiled.available(dev)
        self.training = template.training
        self.batch_size = template.batch_size
        self.input_shape, self.n_outputs = dataset.input_shape, dataset.n_outputs
        # The network, traced once: what the stack holds and how a pass runs through it (at the
        # template's own widths, whatever the template's ``width``: trials narrow inside it).
        torch.manual_seed(0)
        net = replace(template, width=None).network(dataset.input_shape, dataset.n_outputs)
        self.program = stacking.program(net)  # Unstackable: the caller trains per trial
        self.n_params = count_parameters(net)
        self.P, self.K = slots, len(splits)
        self.M = slots * self.K
        self.autocast = bf16_autocast(dev.type) if precision == "bf16" else nullcontext()
        self.rows = StackedRows(dataset, splits, slots, dev)
        self.steps = self.rows.steps(self.batch_size, 2 if self.program.norms else 1)
        self.layers = StackedLayers(
            self.program, net, self.M, dev, n_features=math.prod(self.input_shape)
        )
        self.regularized = regularized_names(
            net, include_bias_and_bn=self.training.regularize_bias_and_bn
        )
        self.optimizer = StackedOptimizer(
            self.layers.params,
            self.regularized,
            training=self.training,
            units=self.layers.units(),
            adam=template.optimizer == "adam",
            compile=self.compiled,
        )
        self.record = StackedResults(self.M, self.training, metric, dev)
        self.augment = augmentation.StackedAugmentation(
            self.M, self.input_shape, dataset.task, self.n_outputs, dev
        )
        self.seeds = torch.zeros(self.M, dtype=torch.long, device=dev)
        if self.compiled:  # for CUDA graphs: no copy of them before a replay, no skip
            compiled.mark_static(self.rows, self.layers, self.optimizer, self.record, self)
        # Host side: what each slot holds.
        self.occupant: list[TrialConfig | None] = [None] * slots
        self.started = [0.0] * slots
        self.slot_epochs = [0] * slots
        # Per slot: its network's own tensor shapes and parameter count (narrowed by width).
        self.shapes: list[dict[str, tuple[int, ...]]] = [{}] * slots
        self.slot_params = [self.n_params] * slots
        self.refresh_flags()

    # --- slots ---------------------------------------------------------------------------

    def rows_of(self, slot: int) -> slice:
        """The rows of ``slot``'s K models."""
        return self.rows.rows_of(slot)

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
        rows = self.rows_of(slot)
        seeds = list(fold_seeds or [fold_seed(seed, k) for k in range(self.K)])
        if len(seeds) != self.K:
            raise ValueError(f"{len(seeds)} fold seeds for {self.K} folds")
        nets = []
        for s in seeds:
            torch.manual_seed(s)
            nets.append(config.network(self.input_shape, self.n_outputs))
        self.layers.load(rows, nets, config)
        if not self.compiled:  # a narrow trial's masks go with the last narrow trial
            self.layers.drop_full_masks()
        self.augment.load(rows, config.augmentation)
        self.optimizer.restart(rows, config)
        self.record.restart(rows, config.patience)
        self.seeds[rows] = torch.tensor(seeds, device=self.device)
        self.shapes[slot] = {name: tuple(t.shape) for name, t in nets[0].state_dict().items()}
        self.slot_params[slot] = count_parameters(nets[0])
        self.occupant[slot] = config
        self.started[slot] = time.perf_counter()
        self.slot_epochs[slot] = 0
        self.refresh_flags()

    def release(self, slot: int) -> None:
        """Empty ``slot``: its models stop stepping (their compute stays, masked)."""
        self.stop(slot)
        self.occupant[slot] = None
        self.refresh_flags()

    def stop(self, slot: int) -> None:
        """Stop every fold of ``slot``'s trial (pruned, or a fold diverged); it stays in the
        slot until released."""
        self.record.stop(self.rows_of(slot))

    def refresh_flags(self) -> None:
        """Skip the L1 and dropout work while no occupant needs it (eager only: a compiled
        step keeps one graph whoever is in the slots, a zero λ₁ and p = 0 change nothing),
        and max-norm unless some occupant has a c: compiled too, since a study's trials all
        have one or none do, and a study without max-norm must train as it always has."""
        configs = [c for c in self.occupant if c is not None]
        self.uses_max_norm = any(c.max_norm is not None for c in configs)
        # The augmentations some occupant has: run eagerly, compiled or not.
        self.augment.use(c.augmentation for c in self.occupant if c is not None)
        if self.compiled:
            self.uses_l1, self.uses_dropout = True, bool(self.program.dropouts)
            return
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
        return self.program.run(self.layers, x, context).float()

    # --- training ------------------------------------------------------------------------

    def train_epoch(self) -> None:
        """One epoch for every active model, with no host synchronisation: every tensor the
        steps need is made here, on the device, from the models' seeds and own epochs."""
        B, steps, record = self.batch_size, self.steps, self.record
        epoch_key = rng.keys_at(self.seeds, record.epochs)
        order = self.rows.shuffled(epoch_key, steps)
        stepping = steps.has_batch & record.active[None, :]  # [S, M]
        # The same masks on the host (the folds' sizes and who is active are known there).
        stepping_host = steps.has_batch_host & np.array(record.host_active)[None, :]
        keys = None
        if self.uses_dropout:  # a key per (step, layer, model), all drawn at once
            keys = rng.key_table(epoch_key, steps.count, len(self.program.dropouts))
        augment_keys = None
        if self.augment.ops:  # a key per (step, operation, model), none drawn without them
            augment_keys = augmentation.step_keys(epoch_key, steps.count)
        self.total = torch.zeros(self.M, device=self.device)
        self.seen = torch.zeros(self.M, device=self.device)
        for step in steps.steps:
            self.step(
                order[:, step * B : (step + 1) * B],
                stepping[step],
                None if keys is None else keys[step],
                full=steps.full[step],
                rows=np.flatnonzero(stepping_host[step]),
                augment_keys=None if augment_keys is None else augment_keys[step],
            )

    def step(
        self,
        position: torch.Tensor,
        stepping: torch.Tensor,
        dropout_keys: torch.Tensor | None,
        *,
        full: bool,
        rows: np.ndarray,
        augment_keys: torch.Tensor | None = None,
    ) -> None:
        """One optimizer step of every model whose ``stepping`` is set (``rows`` on the host),
        on its ``position`` rows ``[M, B]`` of its shuffled fit rows (augmented with
        ``augment_keys`` ``[operations, M]``, if given)."""
        if augment_keys is None:
            batch_loss = self.compiled_or(step_loss)
            loss, counts = batch_loss(self, position, stepping, dropout_keys, full)
        else:  # augmented eagerly, then the step's forward and loss (compiled on their own)
            x, targets, valid = self.rows.batch(position)
            x, targets = self.augment.apply(x, targets, valid, augment_keys, self.batch_size)
            forward_loss = self.compiled_or(training_loss)
            loss, counts = forward_loss(self, x, targets, valid, stepping, dropout_keys, full)
        for p in self.layers.params.values():
            p.grad = None
        (loss * stepping).sum().backward()
        self.optimizer.step(stepping, rows, uses_l1=self.uses_l1, uses_max_norm=self.uses_max_norm)
        self.total += torch.where(stepping, loss.detach() * counts, 0.0)
        self.seen += torch.where(stepping, counts, 0).to(self.seen.dtype)

    def compiled_or(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` compiled (:mod:`trainer.engines.compiled`) if this stack compiles."""
        return compiled.compile_step(function, self.device) if self.compiled else function

    @torch.no_grad()
    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(validation data loss, objective on the scored rows) per model, in evaluation mode:
        both sets of rows in one forward pass (half the launches of two)."""
        rows = self.rows
        index, valid, scored = rows.eval_index, rows.eval_valid, rows.score_valid
        val = rows.val_valid
        width = val.shape[1]
        # In passes of at most EVAL_ROWS model-rows: the activations of all M models' rows at
        # once are the stack's peak memory. Each row's output is its own in evaluation mode
        # (running BatchNorm statistics, no dropout), so the passes change no result.
        chunk = max(1, EVAL_ROWS // self.M)
        with self.autocast:
            outputs = torch.cat(
                [
                    self.forward(
                        self.rows.features(index[:, i : i + chunk]), valid[:, i : i + chunk]
                    )
                    for i in range(0, max(index.shape[1], 1), chunk)  # one pass if no rows
                ],
                dim=1,
            )
        targets = self.rows.targets(index)
        val_loss = scoring.data_loss(self.task, outputs[:, :width], targets[:, :width], val)
        outputs, targets = outputs[:, width:], targets[:, width:]
        loss = scoring.data_loss(self.task, outputs, targets, scored)
        metric = scoring.objective(
            self.metric, loss, outputs, targets, valid=scored, y_std=self.rows.y_std
        )
        return val_loss, metric.to(torch.float32)

    @torch.no_grad()
    def end_epoch(self) -> list[SlotEpoch]:
        """Validation, early stopping and scoring for the epoch just trained, then its one host
        synchronisation: what each trial that trained did (:class:`SlotEpoch`)."""
        rows = self.rows
        train_loss = self.total / self.seen.clamp(min=1.0)
        val_loss, score = self.evaluate()
        improved, table = self.record.end_epoch(
            train_loss, val_loss, score, unvalidated=rows.unvalidated
        )
        self.layers.keep_best(improved)
        reports = []
        for slot, config in enumerate(self.occupant):
            folds = range(slot * self.K, (slot + 1) * self.K)
            if config is None or not any(table.trained[r] for r in folds):
                continue
            reports.append(
                SlotEpoch(
                    slot=slot,
                    epoch=self.slot_epochs[slot],
                    value=float(np.mean([table.best_score[r] for r in folds])),
                    diverged=any(table.diverged[r] for r in folds),
                    finished=not any(table.active[r] for r in folds),
                )
            )
            self.slot_epochs[slot] += 1
        return reports

    # --- what a trial comes to -----------------------------------------------------------

    @torch.no_grad()
    def module(self, slot: int, fold: int) -> nn.Module:
        """Fold ``fold`` of ``slot``'s trial as its own ``nn.Module`` (evaluation mode), with
        its best weights and running statistics."""
        config = self.occupant[slot]
        assert config is not None
        net = config.network(self.input_shape, self.n_outputs).to(self.device)
        return self.layers.export(slot * self.K + fold, net)

    def trained(self, slot: int, fold: int) -> TrainedFold:
        """Fold ``fold`` of ``slot``'s trial, done: its model, curve and best epoch's score."""
        row = slot * self.K + fold
        score = float(self.record.best_score[row])
        train_loss = self.record.train_curves[row]
        return TrainedFold(self.module(slot, fold), self.rows.folds[fold], train_loss, score)

    def result(self, slot: int) -> CVResult:
        """The cross-validation result of ``slot``'s trial, from its folds' best epochs."""
        assert self.occupant[slot] is not None
        rows, shapes = self.rows_of(slot), self.shapes[slot]
        best = {name: self.layers.live(name, rows, shapes[name]) for name in self.layers.params}
        return self.record.result(
            rows,
            self.rows.folds,
            sparsity([t for name, t in best.items() if name in self.regularized]),
            nonzero(list(best.values())),
            n_params=self.slot_params[slot],
            started=self.started[slot],
        )


def step_loss(
    population: Population,
    position: torch.Tensor,
    stepping: torch.Tensor,
    dropout_keys: torch.Tensor | None,
    full: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model training loss ``[M]`` on the batch at ``position`` and its row counts: the
    fixed-shape part of a step that :mod:`trainer.engines.compiled` compiles (backward included)."""
    x, targets, valid = population.rows.batch(position)
    return training_loss(population, x, targets, valid, stepping, dropout_keys, full)


def training_loss(
    population: Population,
    x: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    stepping: torch.Tensor,
    dropout_keys: torch.Tensor | None,
    full: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`step_loss` on a batch given as its rows ``x`` ``[M, B, d]``, ``targets`` and
    ``valid`` ``[M, B]``: what is compiled apart when the batch was augmented first (its
    targets then may be class probabilities)."""
    p = population
    with p.autocast:
        outputs = p.forward(x, valid, stepping=stepping, dropout_keys=dropout_keys, full=full)
    return scoring.data_loss(p.task, outputs, targets, valid), valid.sum(1)


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
