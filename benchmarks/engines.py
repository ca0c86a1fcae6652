"""Throughput of three ways to cross-validate the same trials, side by side in one run.

Reference workload: digits, an MLP 64-256-256-10 (``--model mlp``) or a CNN (``--model cnn``:
conv 32, conv 64, 3×3 stride 2 over the 8×8 image, then 256-256-10), with BatchNorm and
dropout, Adam lr 1e-3, batch 64, 5 folds, a fixed number of epochs (no early stopping, no
pruning), P trials whose regularization is drawn from the default search space with a fixed
seed. The engines:

  (a) textbook: what a user writes from the tutorials: an Optuna-style objective, per fold a
      StandardScaler, a DataLoader over a TensorDataset, nn.Sequential, torch.optim.Adam,
      one fold after another;
  (b) per-trial: regtune's engine (data on the device, index-gather batches, folds in lockstep);
  (c) population: regtune's stacked engine, all P × 5 models as one;
  (d) population, one trial per stack: the layout ``trainer.layout`` picks on a CPU;
  (e) (d) in one 1-thread process per core, as ``regtune serve``/``regtune worker`` run it on
      a CPU machine (the processes are started before the clock, as long-lived workers are).

(a)–(d) run at 1 and at all threads; the best of the two counts. It prints fold-epochs per second,
wall time, best CV accuracy, the speed-up over (a), and achieved model FLOP/s against the
device's measured dense matmul rate (a training step's FLOPs per sample, forward and backward,
as torch's ``FlopCounterMode`` counts them on the model).

    .venv/bin/python benchmarks/engines.py --append BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import optuna
import torch
from provenance import append_section, command_line, git_commit, machine
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from trainer import layout
from trainer.config import TrialConfig
from trainer.datasets import Dataset, load_builtin
from trainer.engine import cross_validate
from trainer.models import build_model
from trainer.objective import suggest
from trainer.population import train_population
from trainer.spec import StudySpec
from trainer.splits import Split
from trainer.study import Protocol

WORKLOADS = {
    "mlp": "MLP 64-256-256-10",
    "cnn": "CNN conv3×3/2 1→32→64 on 8×8, then 256-256-10",
}
MODELS = {
    "mlp": {"hidden": [256, 256]},
    "cnn": {"kind": "cnn", "channels": [32, 64], "kernel_size": 3, "stride": 2},
}


def reference(epochs: int, model: str = "mlp") -> StudySpec:
    return StudySpec(
        dataset="builtin:digits",
        model=MODELS[model],
        training={"max_epochs": epochs},
        cv={"folds": 5},
        search_space={"patience": epochs + 1},
        pruner={"kind": "none"},
    )


def draw_configs(spec: StudySpec, n: int, seed: int) -> list[TrialConfig]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [
        TrialConfig.from_values(spec, suggest(study.ask(), spec.search_space)) for _ in range(n)
    ]


WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def textbook(
    data: Dataset, configs: list[TrialConfig], protocol: Protocol, epochs: int
) -> list[float]:
    """The loop from the tutorials, kept honest: same model, same regularizers, same folds."""
    means = []
    for config in configs:
        scores = []
        for split in protocol.splits:
            train = split.fit  # the rows the engines take steps on
            scaler = StandardScaler().fit(data.X[train])
            X_train = torch.tensor(scaler.transform(data.X[train]), dtype=torch.float32)
            X_test = torch.tensor(scaler.transform(data.X[split.score]), dtype=torch.float32)
            y_train, y_test = torch.tensor(data.y[train]), torch.tensor(data.y[split.score])
            loader = DataLoader(
                TensorDataset(X_train, y_train),
                batch_size=config.batch_size,
                shuffle=True,
                drop_last=len(train) % config.batch_size == 1,
            )
            # The same network as the engines; what differs is the loop around it.
            model = config.network(data.input_shape, data.n_outputs)
            optimizer = torch.optim.Adam(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay
            )
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(epochs):
                model.train()
                for xb, yb in loader:
                    optimizer.zero_grad()
                    loss = loss_fn(model(xb), yb)
                    loss = loss + config.l1 * sum(
                        m.weight.abs().sum() for m in model.modules() if isinstance(m, WEIGHTED)
                    )
                    loss.backward()
                    optimizer.step()
            model.eval()
            with torch.no_grad():
                scores.append(float((model(X_test).argmax(1) == y_test).float().mean()))
        means.append(float(np.mean(scores)))
    return means


def per_trial(
    data: Dataset, configs: list[TrialConfig], protocol: Protocol, epochs: int
) -> list[float]:
    return [
        cross_validate(data, c, protocol.splits, metric="accuracy", seed=i).mean
        for i, c in enumerate(configs)
    ]


def population_of(size: int) -> Callable[..., list[float]]:
    """Populations of ``size`` trials, one after another, in this process."""

    def run(
        data: Dataset, configs: list[TrialConfig], protocol: Protocol, epochs: int
    ) -> list[float]:
        means: list[float] = []
        for first in range(0, len(configs), size):
            chunk = configs[first : first + size]
            seeds = list(range(first, first + len(chunk)))
            means += population_means(data, chunk, protocol.splits, seeds)
        return means

    return run


def population_means(
    data: Dataset, configs: list[TrialConfig], splits: list[Split], seeds: list[int]
) -> list[float]:
    outcomes = train_population(data, configs, splits, seeds=seeds, metric="accuracy")
    return [o.mean for o in outcomes]  # type: ignore[union-attr]


_DATA: dict[str, Dataset] = {}


def _population_job(
    name: str, configs: list[TrialConfig], splits: list[Split], seeds: list[int]
) -> list[float]:
    """One population in a worker process (data loaded once per process)."""
    if name not in _DATA:
        _DATA[name] = load_builtin(name)
    return population_means(_DATA[name], configs, splits, seeds)


def _one_thread() -> None:
    torch.set_num_threads(1)


def _one_thread_ready(_: int) -> int:
    return torch.get_num_threads()


def population_in(pool: ProcessPoolExecutor, size: int) -> Callable[..., list[float]]:
    """Populations of ``size`` trials spread over the pool's 1-thread processes."""

    def run(
        data: Dataset, configs: list[TrialConfig], protocol: Protocol, epochs: int
    ) -> list[float]:
        jobs = [
            pool.submit(
                _population_job,
                data.name,
                configs[first : first + size],
                list(protocol.splits),
                list(range(first, min(first + size, len(configs)))),
            )
            for first in range(0, len(configs), size)
        ]
        return [mean for job in jobs for mean in job.result()]

    return run


def training_flops(spec: StudySpec, data: Dataset, batch: int = 64) -> float:
    """FLOPs of one training step per sample (forward, loss, backward), counted by torch."""
    model = build_model(spec.model, data.input_shape, data.n_outputs, dropout=0.5, bn_momentum=0.1)
    x = torch.randn(batch, data.n_features)
    y = torch.randint(0, data.n_outputs, (batch,))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def matmul_rate(threads: int, size: int = 1024, repeats: int = 20) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--engines", help="comma-separated engine names as printed (default: all)")
    parser.add_argument("--append", type=Path)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    commit = git_commit()
    started = datetime.now(UTC)

    data = load_builtin("builtin:digits")
    spec = reference(args.epochs, args.model)
    protocol = Protocol.of(spec, data)
    configs = draw_configs(spec, args.trials, seed=0)
    fit_rows = sum(len(s.fit) for s in protocol.splits) / len(protocol.splits)
    fold_epochs = args.trials * len(protocol.splits) * args.epochs
    flops = training_flops(spec, data) * fit_rows * fold_epochs
    cores = os.cpu_count() or 1
    cpu_size = layout.population_size(spec, data, torch.device("cpu"))
    pool = ProcessPoolExecutor(cores, mp_context=get_context("spawn"), initializer=_one_thread)
    list(pool.map(_one_thread_ready, range(cores)))  # start the processes before any clock
    engines: dict[str, Callable[..., list[float]]] = {
        "textbook": textbook,
        "per-trial": per_trial,
        "population": population_of(len(configs)),
        f"population P={cpu_size}": population_of(cpu_size),
        f"population P={cpu_size} ×{cores} processes": population_in(pool, cpu_size),
    }
    thread_options = sorted({1, cores})
    peak = max(matmul_rate(t) for t in thread_options)

    rows = []
    for name in args.engines.split(",") if args.engines else engines:
        in_processes = name.endswith("processes")
        best: tuple[float, int, list[float]] | None = None
        for threads in [1] if in_processes else thread_options:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            scores = engines[name](data, configs, protocol, args.epochs)
            wall = time.perf_counter() - start
            print(
                f"{name:>10} threads={threads}: {wall:6.1f} s, best CV {max(scores):.4f}",
                flush=True,
            )
            if best is None or wall < best[0]:
                best = (wall, threads, scores)
        assert best is not None
        rows.append((name, *best))
    pool.shutdown()

    base = rows[0][1] if rows[0][0] == "textbook" else None
    lines = [
        f"\n## Engines: textbook vs per-trial vs population, {args.model.upper()} "
        f"({started:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command_line()}`",
        f"- device: CPU: {machine()}; commit `{commit}`",
        f"- workload: digits, {WORKLOADS[args.model]} (BN, dropout), Adam, batch 64, 5 folds, "
        f"{args.epochs} epochs, {args.trials} trials = {fold_epochs} fold-epochs; "
        f"{flops / 1e9:.0f} GFLOP of training (torch's FlopCounterMode × rows)",
        f"- dense fp32 matmul (1024², best of {thread_options} threads): {peak / 1e9:.1f} GFLOP/s",
        "",
        "| engine | threads | wall s | fold-epochs/s | × textbook | best CV acc | GFLOP/s "
        "| % of matmul |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, wall, threads, scores in rows:
        ratio = f"{base / wall:.2f}" if base else "–"
        rate = flops / wall
        lines.append(
            f"| {name} | {threads} | {wall:.1f} | {fold_epochs / wall:.1f} | {ratio} | "
            f"{max(scores):.4f} | {rate / 1e9:.2f} | {100 * rate / peak:.1f} |"
        )
    lines.append("")
    print("\n".join(lines))
    if args.append:
        append_section(args.append, "\n".join(lines))


if __name__ == "__main__":
    main()
