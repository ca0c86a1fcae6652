"""The per-trial engine: k folds of one configuration, in lockstep or one after another.

The data of a fold lives on the device as three tensors (fit / val / score) and mini-batches
are index gathers, so no DataLoader or host copy sits in the step. Each epoch every active
fold takes one pass over its ``fit`` rows, then its inner-validation loss drives early
stopping; the scored fold is evaluated only when the validation loss improves, because the
fold's result is the score of its best epoch's weights. After the epoch the fold mean of
those scores is handed to ``on_epoch`` (Optuna's ``report``/``should_prune``), so the value
reported at the last epoch is the trial's value.

Each fold is its own ``nn.Module`` trained by ``torch.optim``; the population engine
(:mod:`trainer.engines.population`) trains many of them as one stacked model instead, and is
what a study uses where it can. This engine is kept where the population does not serve:

* a network the population cannot stack (:class:`trainer.engines.stacking.Unstackable`): its
  trials, and its refit (:mod:`trainer.tuning.refit`);
* studies whose pruner decides between folds (Wilcoxon), whose folds train one after another
  here: the population's dropout masks are its own counter-based ones, not torch's generator's,
  and its sums run in another order, so moving them would change those studies' results;
* the fold ensemble of a final model (:func:`fold_ensemble`), which retrains the folds exactly
  as :func:`cross_validate` trains them.

It is also the reference the population is tested against. What both engines mean the same
way is written once beside them: the fold's preprocessing, seed and results
(:mod:`~trainer.engines.folds`), the loss and the objective (:mod:`~trainer.engines.scoring`),
early stopping (:mod:`~trainer.engines.early_stopping`) and the diagnosis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from trainer import rng, torch_internals
from trainer.data.datasets import Dataset
from trainer.data.preprocessing import Standardizer
from trainer.data.splits import Split
from trainer.engines import augmentation, scoring
from trainer.engines.early_stopping import EarlyStopping
from trainer.engines.folds import Fold, TrainedFold, fold_seed
from trainer.engines.regularizers import make_optimizer, nonzero
from trainer.engines.results import CVResult, DivergedError, FoldEnsemble, FoldResult
from trainer.engines.trial_config import TrialConfig
from trainer.nets.networks import count_parameters
from trainer.specs.study_spec import Metric, Task

EVAL_CHUNK = 8192
Schedule = Literal["lockstep", "sequential"]


@dataclass(frozen=True)
class FoldData:
    """A fold's rows on the device as three sets (fit / val / score), standardized by the
    fold's preprocessing (fitted on ``fit`` only)."""

    X_fit: torch.Tensor
    y_fit: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_score: torch.Tensor
    y_score: torch.Tensor

    @classmethod
    def build(
        cls, dataset: Dataset, fold: Fold, X: np.ndarray, device: torch.device | str
    ) -> FoldData:
        """``fold``'s rows of the features ``X`` (as :meth:`Fold.fit` gave them)."""
        x_scaler, y_scaler = fold.preprocessing.x_scaler, fold.preprocessing.y_scaler
        y = dataset.y
        targets = torch.as_tensor(y if y_scaler is None else y_scaler.transform(y[:, None]))

        def rows(index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            features = torch.as_tensor(x_scaler.transform(X[index]))
            return features.to(device), targets[index].to(device)

        split = fold.split
        return cls(*rows(split.fit), *rows(split.val), *rows(split.score))


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Outputs in evaluation mode (running BN statistics, no dropout), in chunks."""
    model.eval()
    return torch.cat([model(X[i : i + EVAL_CHUNK]) for i in range(0, len(X), EVAL_CHUNK)])


def score(
    metric: Metric,
    task: Task,
    outputs: torch.Tensor,
    targets: torch.Tensor,
    y_scaler: Standardizer | None,
) -> float:
    """The objective (:func:`scoring.objective`) of one model's ``outputs`` on one set; the
    target's σ in float64, as the scalers keep it."""
    y_std = None if y_scaler is None else torch.tensor(float(y_scaler.std[0]), dtype=torch.float64)
    loss = scoring.data_loss(task, outputs, targets)
    return float(scoring.objective(metric, loss, outputs, targets, y_std=y_std))


class FoldRun:
    """One fold's model, optimizer, early stopping and best weights while it trains."""

    def __init__(
        self,
        index: int,
        dataset: Dataset,
        config: TrialConfig,
        split: Split,
        *,
        metric: Metric,
        device: torch.device | str,
        seed: int,
    ) -> None:
        self.index, self.config, self.metric = index, config, metric
        self.task: Task = dataset.task
        X, self.fold = Fold.fit(dataset, split, index)
        self.data = FoldData.build(dataset, self.fold, X, device)
        torch.manual_seed(seed)
        self.model = config.network(dataset.input_shape, dataset.n_outputs).to(device)
        self.optimizer, self.regularizer = make_optimizer(
            self.model,
            optimizer=config.optimizer,
            lr=config.lr,
            weight_decay=config.weight_decay,
            l1=config.l1,
            decoupled=config.training.l2_mode == "decoupled",
            momentum=config.training.momentum,
            include_bias_and_bn=config.training.regularize_bias_and_bn,
            max_norm=config.max_norm,
        )
        self.stopper = EarlyStopping(config.patience, config.training.min_delta)
        # The same augmentation as the population's, as a stack of one.
        self.augment = augmentation.StackedAugmentation(
            1, dataset.input_shape, dataset.task, dataset.n_outputs, device
        )
        self.augment.load(slice(0, 1), config.augmentation)
        self.augment.use([config.augmentation])
        self.batch_norm = any(torch_internals.is_batch_norm(m) for m in self.model.modules())
        self.seed = seed
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_score = math.nan
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []
        self.done = False

    @property
    def epoch(self) -> int:
        return len(self.train_loss)

    def train_epoch(self) -> None:
        """One pass over the fit rows, then validation, early stopping and (if best) scoring."""
        d, training = self.data, self.config.training
        self.model.train()
        n, B = len(d.X_fit), self.config.batch_size
        order = batch_order(self.seed, self.epoch, n, d.X_fit.device)
        total = torch.zeros((), device=d.X_fit.device)
        seen = 0
        augment_keys = None
        if self.augment.ops:  # keyed as the population keys this fold's model: seed, epoch
            epoch_key = rng.keys(torch.tensor([self.seed], device=d.X_fit.device), self.epoch)
            augment_keys = augmentation.step_keys(epoch_key, -(-n // B))
        for start in range(0, n, B):
            batch = order[start : start + B]
            if len(batch) < 2 and self.batch_norm:  # BN cannot normalize a batch of one
                continue
            x, y = d.X_fit[batch], d.y_fit[batch]
            if augment_keys is not None:
                x, y = self.augment.apply(x[None], y[None], None, augment_keys[start // B], B)
                x, y = x[0], y[0]
            loss = scoring.data_loss(self.task, self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            (loss + self.regularizer.penalty()).backward()  # type: ignore[no-untyped-call]
            if training.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), training.grad_clip)
            self.regularizer.decay(self.config.lr)
            self.optimizer.step()
            self.regularizer.project()
            total += loss.detach() * len(batch)
            seen += len(batch)
        # One host sync per epoch: the loss is read here, not in the step.
        train_loss = float(total) / max(seen, 1)
        epoch = self.epoch
        self.train_loss.append(train_loss)
        validated = len(d.X_val) > 0
        val_loss = (
            float(scoring.data_loss(self.task, predict(self.model, d.X_val), d.y_val))
            if validated
            else train_loss
        )
        self.val_loss.append(val_loss)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise DivergedError(
                f"fold {self.index} diverged at epoch {epoch}: training loss {train_loss}, "
                f"validation loss {val_loss} (try a smaller lr or a gradient clip)"
            )
        if self.stopper.step(val_loss, epoch, always=not validated):
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best_score = self.evaluate()
        if self.stopper.should_stop or self.epoch >= training.max_epochs:
            self.model.load_state_dict(self.best_state)
            self.done = True

    def evaluate(self) -> float:
        """The objective on the scored rows with the current weights (NaN if there are none)."""
        d = self.data
        if len(d.X_score) == 0:
            return math.nan
        y_scaler = self.fold.preprocessing.y_scaler
        return score(self.metric, self.task, predict(self.model, d.X_score), d.y_score, y_scaler)

    def result(self) -> FoldResult:
        return self.fold.result(
            score=self.best_score,
            best_epoch=self.stopper.best_epoch,
            epochs=self.epoch,
            stopped_early=self.stopper.should_stop,
            train_loss=self.train_loss,
            val_loss=self.val_loss,
            sparsity=self.regularizer.sparsity(),
            # Once done, the model holds its best epoch's weights: those are counted.
            nonzero_params=int(nonzero([p[None] for p in self.model.parameters()])[0]),
            max_epochs=self.config.training.max_epochs,
        )

    def trained(self) -> TrainedFold:
        """The fold's model with its best epoch's weights, once it is done."""
        return TrainedFold(self.model, self.fold, self.train_loss, self.best_score)


def batch_order(seed: int, epoch: int, n: int, device: torch.device | str) -> torch.Tensor:
    """The epoch's shuffle of ``n`` rows: counter-based, so a population draws the same."""
    key = rng.keys(torch.tensor([seed], device=device), epoch)
    return rng.permutations(key, torch.tensor([n], device=device), n)[0]


def fold_runs(
    dataset: Dataset,
    config: TrialConfig,
    splits: Sequence[Split],
    *,
    metric: Metric,
    device: torch.device | str,
    seed: int,
) -> list[FoldRun]:
    """One run per split, fold k seeded by ``fold_seed(seed, k)``."""
    return [
        FoldRun(k, dataset, config, split, metric=metric, device=device, seed=fold_seed(seed, k))
        for k, split in enumerate(splits)
    ]


def train_folds(
    runs: Sequence[FoldRun],
    schedule: Schedule = "lockstep",
    *,
    on_epoch: Callable[[int, float], None] | None = None,
    on_fold: Callable[[int, float], None] | None = None,
) -> None:
    """Train ``runs`` to the end, all in lockstep or one after another (see cross_validate).

    The order matters beyond speed: dropout draws from torch's global generator, so the same
    seeds give the same fold models only in the same schedule.
    """
    groups = [list(runs)] if schedule == "lockstep" else [[run] for run in runs]
    for group in groups:
        while active := [run for run in group if not run.done]:
            for run in active:
                run.train_epoch()
                if run.done and on_fold is not None:
                    on_fold(run.index, run.best_score)
            if on_epoch is not None:
                started = [r.best_score for r in runs if r.epoch > 0]
                on_epoch(active[0].epoch - 1, float(np.mean(started)))


def cross_validate(
    dataset: Dataset,
    config: TrialConfig,
    splits: Sequence[Split],
    *,
    metric: Metric,
    device: torch.device | str = "cpu",
    seed: int = 0,
    schedule: Schedule = "lockstep",
    on_epoch: Callable[[int, float], None] | None = None,
    on_fold: Callable[[int, float], None] | None = None,
) -> CVResult:
    """Train and score ``config`` on every split; return fold scores, curves and diagnosis.

    ``lockstep`` advances all folds one epoch at a time; ``sequential`` trains fold after fold
    (what a per-fold pruner such as Wilcoxon needs). After every epoch ``on_epoch(epoch, mean)``
    gets the mean best-epoch score of the folds started so far (in lockstep: all folds), and
    ``on_fold(k, score)`` is called when fold k finishes. A callback may raise (e.g.
    ``optuna.TrialPruned``) to stop the trial.
    """
    start = time.perf_counter()
    runs = fold_runs(dataset, config, splits, metric=metric, device=device, seed=seed)
    train_folds(runs, schedule, on_epoch=on_epoch, on_fold=on_fold)
    return CVResult(
        metric=metric,
        folds=[run.result() for run in runs],
        n_params=count_parameters(runs[0].model),
        wall_time_s=time.perf_counter() - start,
    )


def fold_ensemble(
    dataset: Dataset,
    config: TrialConfig,
    splits: Sequence[Split],
    test: np.ndarray,
    *,
    metric: Metric,
    device: torch.device | str = "cpu",
    seed: int = 0,
    schedule: Schedule = "lockstep",
) -> FoldEnsemble:
    """Retrain ``config`` on every fold as :func:`cross_validate` does (same rows, same early
    stopping, same seeds and schedule, so on a CPU the same fold models as the trial's when
    the per-trial engine trained it) and keep each fold's best weights.

    The ensemble predicts the mean of its K members: for classification the mean class
    probability p̄ = (1/K) Σ_k softmax(f_k(x)), for regression the mean prediction in the
    target's own units ȳ = (1/K) Σ_k (σ_k f_k(x) + μ_k), each member with the standardization
    of its own fit rows. Its test score is that of p̄ (accuracy, or the loss −log p̄_y) or ȳ.
    """
    # Scored on the test rows, trained exactly as in CV (scoring draws no random numbers).
    scored_on_test = [Split(split.fit, split.val, test) for split in splits]
    runs = fold_runs(dataset, config, scored_on_test, metric=metric, device=device, seed=seed)
    train_folds(runs, schedule)
    members = [
        run.trained().fitted(config, epochs=run.stopper.best_epoch + 1, scored=len(test) > 0)
        for run in runs
    ]
    return FoldEnsemble(members, ensemble_score(runs, metric) if len(test) else None)


def ensemble_score(runs: Sequence[FoldRun], metric: Metric) -> float:
    """The metric of the members' mean prediction on their (shared) scored rows."""
    first = runs[0]
    outputs = [predict(run.model, run.data.X_score) for run in runs]
    y_scaler = first.fold.preprocessing.y_scaler
    if y_scaler is None:  # classification: log p̄ as logits, softmax(log p̄) = p̄
        mean = torch.stack([torch.softmax(out, dim=1) for out in outputs]).mean(0)
        return score(metric, first.task, torch.log(mean), first.data.y_score, None)
    # Regression: average in the target's units, then standardize as the first member does.
    units = np.mean(
        [
            scaler.inverse(out.cpu().numpy())
            for run, out in zip(runs, outputs, strict=True)
            if (scaler := run.fold.preprocessing.y_scaler) is not None
        ],
        axis=0,
    )
    z = torch.as_tensor(y_scaler.transform(units), device=first.data.y_score.device)
    return score(metric, first.task, z, first.data.y_score, y_scaler)
