"""Throughput of three ways to cross-validate the same trials, side by side in one run.

Reference workload: digits, an MLP 64-256-256-10 (``--model mlp``) or a CNN (``--model cnn``:
conv 32, conv 64, 3×3 stride 2 over the 8×8 image, then 256-256-10), with BatchNorm and
dropout, Adam lr 1e-3, batch 64, 5 folds, a fixed number of epochs (no early stopping, no
pruning), P trials whose regularization is drawn from the default search space with a fixed
seed. ``--model image-mlp`` is the compute-bound one: an MLP 784-256-256-10 with batch 256 on
20,000 images of Fashion-MNIST's shape (28×28, 10 classes), made here from the digits
(:func:`image_set`: each 8×8 digit scaled up, shifted and noised; no download), usually run as
``--trials 2 --epochs 2``. The engines:

  (a) textbook: what a user writes from the tutorials: an Optuna-style objective, per fold a
      StandardScaler, a DataLoader over a TensorDataset, nn.Sequential, torch.optim.Adam,
      one fold after another;
  (b) per-trial: regtune's engine (data on the device, index-gather batches, folds in lockstep);
  (c) population: regtune's stacked engine, all P × 5 models as one (``--population-trials``
      sets P; default ``--trials``), eager and compiled (``torch.compile``; CUDA graphs on a
      GPU), in each ``--precision`` (fp32: TF32 matmuls on a GPU; bf16: autocast);
  (d) population, one trial per stack: the layout ``trainer.engines.layout`` picks on a CPU;
  (e) (d) in one 1-thread process per core, as ``regtune serve``/``regtune worker`` run it on
      a CPU machine (the processes are started before the clock, as long-lived workers are);
  (f) with ``--augment``: (c) in fp32, eager and compiled, with the same trials augmented by
      all six augmentations (:data:`AUGMENTED`); the section then gives the epoch time with
      augmentation over the time without, measured side by side in the same run.

On a CPU, (a)–(d) run at 1 and at all threads (``--threads``); the faster counts. It prints
fold-epochs per second, wall time, best CV accuracy, the speed-up over (a) in fold-epochs per
second, and achieved model FLOP/s against the device's measured dense matmul rate in the same
precision (a training step's FLOPs per sample, forward and backward, as torch's
``FlopCounterMode`` counts them on the model). ``--device cuda`` runs it on a GPU.

    .venv/bin/python benchmarks/engines.py --append BENCHMARKS.md
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import optuna
import torch
from provenance import benchmark_parser, command_line, git_commit, machine, markdown_table, publish
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from trainer import (
    CompileCounts,
    CVProtocol,
    Dataset,
    Split,
    StudySpec,
    TrialConfig,
    configure_device,
    cross_validate,
    load_builtin,
    networks,
    population_size,
    stack_bytes,
    suggest,
    train_population,
)

WORKLOADS = {
    "mlp": "MLP 64-256-256-10 (BN, dropout)",
    "cnn": "CNN conv3×3/2 1→32→64 on 8×8, then 256-256-10 (BN, dropout)",
    "layers-cnn": "a `layers` CNN: conv3×3 32, BN, ReLU, maxpool 2, dropout[conv], conv3×3 "
    "64, BN, ReLU, global average pool, dropout[head], 128, 10",
    "plugin": "the plugin `tiny_convnet` (tests/plugins) width 16: conv3×3 without bias, "
    "BN, a residual conv, Dropout2d, maxpool 2, dropout, linear",
    "image-mlp": "MLP 784-256-256-10 (BN, dropout)",
}
IMAGES = "images:20000"  # the image workload's data (:func:`image_set`), by name for workers
DATA = {"image-mlp": IMAGES}  # the other workloads train on builtin:digits
BATCH = {"image-mlp": 256}  # the other workloads: 64
CONV = {"type": "conv2d", "kernel": 3}
MODELS = {
    "mlp": {"hidden": [256, 256]},
    "cnn": {"kind": "cnn", "channels": [32, 64], "kernel_size": 3, "stride": 2},
    "layers-cnn": {
        "kind": "layers",
        "layers": [
            CONV | {"out": 32},
            {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "maxpool2d", "kernel": 2},
            {"type": "dropout", "group": "conv"},
            CONV | {"out": 64},
            {"type": "batchnorm"},
            {"type": "relu"},
            {"type": "global_avgpool"},
            {"type": "dropout", "group": "head"},
            {"type": "linear", "out": 128},
            {"type": "relu"},
            {"type": "linear"},
        ],
    },
    "plugin": {"kind": "plugin", "name": "tiny_convnet", "options": {"width": 16}},
    "image-mlp": {"hidden": [256, 256]},
}
# (f): every augmentation the digits' images take, at typical strengths.
AUGMENTED = {
    "augment.noise": 0.1,
    "augment.mixup": 0.2,
    "augment.shift": 1,
    "augment.flip": 0.5,
    "augment.rotate": 15.0,
    "augment.scale": 0.1,
}
# The test plugins' distribution: on sys.path (and PYTHONPATH, for worker processes) it is
# found as an installed one.
PLUGINS = str(Path(__file__).resolve().parent.parent / "tests" / "plugins")


def image_set(rows: int, seed: int = 0) -> Dataset:
    """``rows`` 28×28 grey images in 10 classes, Fashion-MNIST's shape, from the digits: each
    a random 8×8 digit scaled up to 24×24 (bilinear), placed at a random offset of up to 2
    pixels from the centre, plus Gaussian noise (σ = 0.1 of the pixel range)."""
    digits = load_builtin("builtin:digits")
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, len(digits.y), (rows,), generator=generator)
    small = torch.as_tensor(digits.X, dtype=torch.float32)[pick].view(rows, 1, 8, 8) / 16.0
    large = nn.functional.interpolate(small, size=(24, 24), mode="bilinear", align_corners=False)
    images = torch.zeros(rows, 1, 28, 28)
    offsets = torch.randint(0, 5, (rows, 2), generator=generator)
    for dy in range(5):
        for dx in range(5):
            here = (offsets[:, 0] == dy) & (offsets[:, 1] == dx)
            images[here, :, dy : dy + 24, dx : dx + 24] = large[here]
    images += 0.1 * torch.randn(images.shape, generator=generator)
    return Dataset(
        name=f"images:{rows}",
        X=images.flatten(1).numpy(),
        y=np.asarray(digits.y)[pick.numpy()],
        task="classification",
        input_shape=(1, 28, 28),
        classes=digits.classes,
    )


def load(name: str) -> Dataset:
    """A benchmark's data by name: ``images:ROWS`` (:func:`image_set`) or a built-in set."""
    if name.startswith("images:"):
        return image_set(int(name.removeprefix("images:")))
    return load_builtin(name)


def reference(epochs: int, model: str = "mlp") -> StudySpec:
    return StudySpec(
        dataset="builtin:digits",
        model=MODELS[model],
        training={"max_epochs": epochs, "batch_size": BATCH.get(model, 64)},
        cv={"folds": 5},
        search_space={"patience": epochs + 1},
        pruner={"kind": "none"},
    )


def draw_configs(spec: StudySpec, n: int, seed: int) -> list[TrialConfig]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [TrialConfig.from_values(spec, suggest(study.ask(), spec)) for _ in range(n)]


@dataclass(frozen=True)
class Workload:
    """What every engine is given besides its trials (each trial's epochs: its ``training``)."""

    data: Dataset
    protocol: CVProtocol
    device: str = "cpu"


# An engine: the trials' mean CV accuracies, in the trials' order.
Engine = Callable[[Workload, list[TrialConfig]], list[float]]


def for_epochs(configs: list[TrialConfig], epochs: int) -> list[TrialConfig]:
    """The trials trained for ``epochs`` instead (a compiled engine's warm-up)."""
    return [
        replace(c, training=c.training.model_copy(update={"max_epochs": epochs})) for c in configs
    ]


WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def textbook(work: Workload, configs: list[TrialConfig]) -> list[float]:
    """The loop from the tutorials, kept honest: same model, same regularizers, same folds
    (on a GPU, as the tutorials do it: the model on the device, each batch moved there)."""
    data, protocol, device = work.data, work.protocol, work.device
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
            model = config.network(data.input_shape, data.n_outputs).to(device)
            optimizer = torch.optim.Adam(
                model.parameters(), lr=config.lr, weight_decay=config.weight_decay
            )
            loss_fn = nn.CrossEntropyLoss()
            for _ in range(config.training.max_epochs):
                model.train()
                for xb, yb in loader:
                    xb, yb = xb.to(device), yb.to(device)
                    optimizer.zero_grad()
                    loss = loss_fn(model(xb), yb)
                    loss = loss + config.l1 * sum(
                        m.weight.abs().sum() for m in model.modules() if isinstance(m, WEIGHTED)
                    )
                    loss.backward()
                    optimizer.step()
            model.eval()
            with torch.no_grad():
                hits = model(X_test.to(device)).argmax(1).cpu() == y_test
                scores.append(float(hits.float().mean()))
        means.append(float(np.mean(scores)))
    return means


def per_trial(work: Workload, configs: list[TrialConfig]) -> list[float]:
    splits = work.protocol.splits
    return [
        cross_validate(work.data, c, splits, metric="accuracy", seed=i, device=work.device).mean
        for i, c in enumerate(configs)
    ]


def augmented(engine: Engine, spec: StudySpec) -> Engine:
    """``engine`` on the same trials (their epochs too) with :data:`AUGMENTED` as well."""

    def run(work: Workload, configs: list[TrialConfig]) -> list[float]:
        values = [c.hyperparameters() | AUGMENTED for c in configs]
        more = [
            replace(TrialConfig.from_values(spec, v), training=c.training)
            for c, v in zip(configs, values, strict=True)
        ]
        return engine(work, more)

    return run


def compile_row(
    name: str, warm_s: float, built: CompileCounts, timed: CompileCounts
) -> list[object]:
    skips = built.cudagraph_skips + timed.cudagraph_skips
    return [
        name,
        f"{warm_s:.1f}",
        built.graphs,
        built.graph_breaks,
        skips,
        timed.graphs,
        timed.recompiles,
    ]


@dataclass(frozen=True)
class Entry:
    """An engine of the table: how it runs ``trials`` trials, in which precision; for a
    population, the trials per ``stack`` (for its memory count), ``compiled``, and the
    ``processes`` it runs in (0: this one)."""

    run: Engine
    trials: int
    precision: str = "fp32"
    stack: int | None = None
    compiled: bool = False
    processes: int = 0


@dataclass(frozen=True)
class Row:
    """An engine's fastest run: wall seconds, torch threads, CV scores, a GPU's peak bytes."""

    name: str
    entry: Entry
    wall: float
    threads: int
    scores: list[float]
    peak: int | None = None


def population_of(size: int | None, precision: str = "fp32", compile: bool = False) -> Engine:
    """Populations of ``size`` trials (None: all at once), one after another, here."""

    def run(work: Workload, configs: list[TrialConfig]) -> list[float]:
        means: list[float] = []
        step = size or len(configs)
        for first in range(0, len(configs), step):
            chunk = configs[first : first + step]
            seeds = list(range(first, first + len(chunk)))
            splits = work.protocol.splits
            means += population_means(
                work.data, chunk, splits, seeds, work.device, precision, compile
            )
        return means

    return run


def population_means(
    data: Dataset,
    configs: list[TrialConfig],
    splits: list[Split],
    seeds: list[int],
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
) -> list[float]:
    outcomes = train_population(
        data,
        configs,
        splits,
        seeds=seeds,
        metric="accuracy",
        device=device,
        precision=precision,
        compile=compile,
    )
    return [o.mean for o in outcomes]  # type: ignore[union-attr]


_DATA: dict[str, Dataset] = {}


def _population_job(
    name: str, configs: list[TrialConfig], splits: list[Split], seeds: list[int]
) -> list[float]:
    """One population in a worker process (data loaded once per process)."""
    if name not in _DATA:
        _DATA[name] = load(name)
    return population_means(_DATA[name], configs, splits, seeds)


def _one_thread() -> None:
    torch.set_num_threads(1)


def _one_thread_ready(_: int) -> int:
    return torch.get_num_threads()


class Processes:
    """One 1-thread process per core, started on first use (before any clock: a run that
    needs none spawns none) and stopped by :meth:`close`."""

    def __init__(self, cores: int) -> None:
        self.cores, self.pool = cores, None

    def ready(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                self.cores, mp_context=get_context("spawn"), initializer=_one_thread
            )
            list(self.pool.map(_one_thread_ready, range(self.cores)))
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def population_in(processes: Processes, size: int) -> Engine:
    """Populations of ``size`` trials spread over 1-thread ``processes``."""

    def run(work: Workload, configs: list[TrialConfig]) -> list[float]:
        pool = processes.ready()
        jobs = [
            pool.submit(
                _population_job,
                work.data.name,
                configs[first : first + size],
                list(work.protocol.splits),
                list(range(first, min(first + size, len(configs)))),
            )
            for first in range(0, len(configs), size)
        ]
        return [mean for job in jobs for mean in job.result()]

    return run


def training_flops(spec: StudySpec, data: Dataset, batch: int = 64) -> float:
    """FLOPs of one training step per sample (forward, loss, backward), counted by torch."""
    model = networks.build(spec.model, data.input_shape, data.n_outputs)
    x = torch.randn(batch, data.n_features)
    y = torch.randint(0, data.n_outputs, (batch,))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() / batch


def matmul_rate(device: str, precision: str, threads: int = 1) -> float:
    """Dense matmul FLOP/s measured here: 1024² fp32 on a CPU; 8192² on a GPU, in TF32 for
    fp32 (what the engines use there) or bf16."""
    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    # A CPU has no fast bf16 matmul: a small product keeps the measurement short there.
    size, repeats = (8192, 10) if cuda else (256 if precision == "bf16" else 1024, 20)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument(
        "--population-trials",
        type=int,
        help="trials of the one-stack population engines (default: --trials); a GPU is "
        "filled by hundreds, which the textbook loop would take hours for",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="comma-separated: fp32,bf16")
    parser.add_argument("--engines", help="comma-separated engine names as printed (default: all)")
    parser.add_argument(
        "--threads", help="comma-separated torch thread counts to try on a CPU (default: 1,all)"
    )
    parser.add_argument(
        "--augment", action="store_true", help="also the population with every augmentation"
    )
    parser.add_argument(
        "--scan",
        type=lambda text: [int(p) for p in text.split(",")],
        default=[],
        help="comma-separated P: also an eager population of each size (P trials, one stack)",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.model == "plugin":
        sys.path.insert(0, PLUGINS)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [PLUGINS, os.environ.get("PYTHONPATH")])
        )
    commit = git_commit()
    started = datetime.now(UTC)
    device = args.device
    configure_device(torch.device(device))
    cuda = device.startswith("cuda")

    data = load(DATA.get(args.model, "builtin:digits"))
    spec = reference(args.epochs, args.model)
    protocol = CVProtocol.of(spec, data)
    big = args.population_trials or args.trials
    configs = draw_configs(spec, max(args.trials, big, *args.scan), seed=0)
    fit_rows = sum(len(s.fit) for s in protocol.splits) / len(protocol.splits)
    per_fold_epoch = training_flops(spec, data) * fit_rows
    cores = os.cpu_count() or 1
    precisions = args.precision.split(",")
    work = Workload(data, protocol, device)
    engines: dict[str, Entry] = {
        "textbook": Entry(textbook, args.trials),
        "per-trial": Entry(per_trial, args.trials),
    }
    for precision in precisions:
        tag = "" if precision == "fp32" else f" {precision}"
        engines[f"population P={big}{tag}"] = Entry(
            population_of(None, precision), big, precision, stack=big
        )
        engines[f"population P={big} compiled{tag}"] = Entry(
            population_of(None, precision, compile=True), big, precision, stack=big, compiled=True
        )
    if args.augment:  # (f): beside the same engines without augmentation
        for tag, compiles in (("", False), (" compiled", True)):
            engines[f"population P={big}{tag} augmented"] = Entry(
                augmented(population_of(None, compile=compiles), spec),
                big,
                stack=big,
                compiled=compiles,
            )
    for size in args.scan:  # eager, one stack of each size: where the step stops scaling
        engines[f"population P={size}"] = Entry(population_of(None), size, stack=size)
    processes = Processes(cores)
    if not cuda:
        cpu_size = population_size(spec, data, torch.device("cpu"))
        engines.setdefault(  # a --scan entry of that size stays one stack
            f"population P={cpu_size}", Entry(population_of(cpu_size), args.trials, stack=cpu_size)
        )
        # The layout's choice, twice it, and the trials shared evenly over the processes.
        for size in sorted({cpu_size, 2 * cpu_size, -(-args.trials // cores)}):
            engines[f"population P={size} ×{cores} processes"] = Entry(
                population_in(processes, size), args.trials, stack=size, processes=cores
            )
    # A GPU engine runs one thread; a CPU one at 1 and at all threads, the faster counting.
    thread_options = [1] if cuda else sorted({1, cores})
    if args.threads and not cuda:
        thread_options = [int(t) for t in args.threads.split(",")]
    peaks = {p: max(matmul_rate(device, p, t) for t in thread_options) for p in precisions}
    peaks.setdefault("fp32", max(matmul_rate(device, "fp32", t) for t in thread_options))

    rows = []
    # Per compiled engine: its warm-up epoch's seconds (compilation included), what that built,
    # and the counts after it (what the timed run adds is measured from them).
    warmed: dict[str, tuple[float, CompileCounts, CompileCounts]] = {}
    compilations: list[list[object]] = []
    for name in args.engines.split(",") if args.engines else engines:
        entry = engines[name]
        chosen = configs[: entry.trials]
        assert len(chosen) == entry.trials, f"{name}: {len(configs)} configurations drawn"
        best: tuple[float, int, list[float]] | None = None
        peak = None
        for threads in [1] if entry.processes else thread_options:
            torch.set_num_threads(threads)
            if entry.processes:
                processes.ready()  # started before the clock, as a worker pool would be
            if entry.compiled:  # compiled once per shape; the timed run reuses it
                before, start = CompileCounts.now(), time.perf_counter()
                entry.run(work, for_epochs(chosen, 1))
                sync(device)
                warm_s, after = time.perf_counter() - start, CompileCounts.now()
                warmed[name] = (warm_s, after - before, after)
            sync(device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            scores = entry.run(work, chosen)
            sync(device)
            wall = time.perf_counter() - start
            if cuda:
                peak = torch.cuda.max_memory_allocated(device)
            print(
                f"{name:>10} threads={threads}: {wall:6.1f} s, best CV {max(scores):.4f}",
                flush=True,
            )
            if best is None or wall < best[0]:
                best = (wall, threads, scores)
        assert best is not None
        rows.append(Row(name, entry, *best, peak=peak))
        if name in warmed:  # what the timed run compiled again: nothing, if all is well
            warm_s, built, after = warmed[name]
            compilations.append(compile_row(name, warm_s, built, CompileCounts.now() - after))
    processes.close()

    def fold_epochs(n_trials: int) -> int:
        return n_trials * len(protocol.splits) * args.epochs

    first = rows[0]
    base = fold_epochs(first.entry.trials) / first.wall if first.name == "textbook" else None
    where = torch.cuda.get_device_name(device) if cuda else f"CPU: {machine()}"
    lines = [
        f"\n## Engines: textbook vs per-trial vs population, {args.model} on "
        f"{'GPU' if cuda else 'CPU'} ({started:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command_line()}`",
        f"- device: {where}; torch {torch.__version__}; commit `{commit}`",
        f"- workload: {data.name} ({len(data.y)} rows), {WORKLOADS[args.model]}, Adam, "
        f"batch {spec.training.batch_size}, 5 folds, "
        f"{args.epochs} epochs; {per_fold_epoch / 1e9:.2f} GFLOP per fold-epoch of training "
        "(torch's FlopCounterMode × rows); a compiled engine is timed after one warm-up epoch",
        "- dense matmul: " + ", ".join(f"{p} {peaks[p] / 1e12:.3f} TFLOP/s" for p in sorted(peaks)),
        "- memory: the device's peak while the engine ran (a GPU's `max_memory_allocated`) "
        "beside the memory model's count for one stack (`layout.stack_bytes`, what P on a GPU "
        "is chosen by)",
        "",
    ]

    def mib(size: float | None) -> str:
        return "–" if size is None else f"{size / 2**20:.0f}"

    def row(r: Row) -> list[str]:
        speed = fold_epochs(r.entry.trials) / r.wall
        rate = per_fold_epoch * fold_epochs(r.entry.trials) / r.wall
        model = None
        if r.entry.stack is not None:
            models = r.entry.stack * len(protocol.splits)
            model = stack_bytes(spec, data, models, compiled=r.entry.compiled)
        return [
            r.name,
            str(r.entry.trials),
            str(r.threads),
            f"{r.wall:.1f}",
            f"{speed:.1f}",
            f"{speed / base:.2f}" if base else "–",
            f"{max(r.scores):.4f}",
            f"{rate / 1e9:.2f}",
            f"{100 * rate / peaks[r.entry.precision]:.2f}",
            mib(r.peak),
            mib(model),
        ]

    header = ["engine", "trials", "threads", "wall s", "fold-epochs/s", "× textbook"]
    header += ["best CV acc", "GFLOP/s", "% of matmul", "peak MiB", "model MiB"]
    lines += markdown_table(header, "lrrrrrrrrrr", (row(r) for r in rows))
    if compilations:
        lines += [
            "",
            "Compilation (torch.compile's counters; the warm-up is one epoch, compiling included; "
            "a graph built again while timed is a recompile):",
            "",
        ]
        header = ["engine", "warm-up s", "graphs", "graph breaks", "cudagraph skips"]
        header += ["graphs while timed", "recompiles while timed"]
        lines += markdown_table(
            header,
            "lrrrrrr",
            compilations,
        )
    walls = {r.name: r.wall for r in rows}
    ratios = [
        f"- augmentation ({', '.join(AUGMENTED)}): an epoch of {plain} takes "
        f"{wall / walls[plain]:.2f}× its time without (side by side in this run)"
        for name, wall in walls.items()
        if (plain := name.removesuffix(" augmented")) != name and plain in walls
    ]
    publish(lines + (["", *ratios] if ratios else []), args.append)


if __name__ == "__main__":
    main()
