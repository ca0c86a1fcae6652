"""Where one epoch of the population engine spends its time: ``torch.profiler`` over one
epoch (after a warm-up epoch, and after compilation with ``--compile``), grouped into matrix
products, elementwise work, data movement and the rest.

    .venv/bin/python benchmarks/profile_epoch.py --trials 1          # a CPU worker's stack
    python3 benchmarks/profile_epoch.py --device cuda --trials 512 --compile
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import torch
from engines import MODELS, draw_configs, reference, sync
from provenance import benchmark_parser, command_line, git_commit, machine, markdown_table, publish
from torch.profiler import ProfilerActivity, profile

from trainer import CVProtocol, Population, configure_device, load_builtin

MATMUL = ("bmm", "baddbmm", "addmm", "mm", "matmul", "convolution", "conv")
MOVEMENT = ("copy_", "index", "gather", "cat", "stack", "pad", "to", "_to_copy", "clone")


def kind(name: str) -> str:
    op = name.removeprefix("aten::")
    if any(op == m or op.startswith(m + "_") for m in MATMUL):
        return "matrix products"
    if op in MOVEMENT or op.startswith("index"):
        return "data movement"
    if name.startswith("aten::"):
        return "elementwise and reductions"
    return "other (outside ATen: Python, compiled regions)"


def phase_times(population: Population, device: str) -> dict[str, float]:
    """One epoch's seconds in the steps' forward and backward, the optimizer's updates, and
    the end of the epoch (evaluation and bookkeeping): the two methods timed in place."""
    spent = {"forward and backward": 0.0, "optimizer": 0.0, "end of epoch": 0.0}

    def timed(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            sync(device)
            start = time.perf_counter()
            result = method(*args, **kwargs)
            sync(device)
            spent[name] += time.perf_counter() - start
            return result

        return run

    step, end_epoch = population.optimizer.step, population.end_epoch
    population.optimizer.step = timed("optimizer", step)  # type: ignore[method-assign]
    sync(device)
    start = time.perf_counter()
    population.train_epoch()
    sync(device)
    steps = time.perf_counter() - start
    timed("end of epoch", end_epoch)()
    population.optimizer.step = step  # type: ignore[method-assign]
    spent["forward and backward"] = steps - spent["optimizer"]
    return spent


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=20, help="operators listed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    configure_device(device)
    started = datetime.now(UTC)
    data = load_builtin("builtin:digits")
    spec = reference(args.epochs, args.model)
    protocol = CVProtocol.of(spec, data)
    configs = draw_configs(spec, args.trials, seed=0)
    population = Population(
        data,
        protocol.splits,
        configs[0],
        slots=args.trials,
        metric="accuracy",
        device=device,
        precision=args.precision,
        compile=args.compile,
    )
    for slot, config in enumerate(configs):
        population.assign(slot, config, slot)
    population.train_epoch()  # warm-up (and compilation)
    population.end_epoch()
    sync(args.device)
    start = time.perf_counter()
    population.train_epoch()  # timed without the profiler, whose start-up is slow
    population.end_epoch()
    sync(args.device)
    plain = time.perf_counter() - start
    phases = phase_times(population, args.device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        population.train_epoch()
        population.end_epoch()
        sync(args.device)
    wall = time.perf_counter() - start
    events = prof.key_averages()
    cuda = device.type == "cuda"

    def self_time(event: object) -> float:
        field = "self_device_time_total" if cuda else "self_cpu_time_total"
        return float(getattr(event, field, 0.0))

    groups: dict[str, float] = defaultdict(float)
    for event in events:
        groups[kind(event.key)] += self_time(event)
    total = sum(groups.values()) or 1.0
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    table = events.table(sort_by=sort, row_limit=args.rows)
    lines = [
        f"\n## Profile of one {'GPU' if cuda else 'CPU'} epoch: population of {args.trials} "
        f"trial(s) × 5 folds ({started:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command_line()}`",
        f"- device: {torch.cuda.get_device_name(device) if cuda else machine()}; "
        f"commit `{git_commit()}`; {args.threads} thread(s); precision {args.precision}; "
        f"{'compiled' if args.compile else 'eager'}",
        f"- workload: digits, {args.model.upper()}, batch 64, "
        f"{len(population.steps.steps)} steps; one epoch {plain:.3f} s ({wall:.3f} s under the "
        "profiler)",
        "- its phases (another epoch, the device synchronised after each): "
        + ", ".join(f"{name} {seconds * 1000:.1f} ms" for name, seconds in phases.items()),
        "",
    ]
    lines += markdown_table(
        [f"where the {'GPU' if cuda else 'CPU'} time goes (self time)", "ms", "share"],
        "lrr",
        (
            [group, f"{micros / 1000:.1f}", f"{100 * micros / total:.0f} %"]
            for group, micros in sorted(groups.items(), key=lambda kv: -kv[1])
        ),
    )
    lines += ["", "```", table, "```"]
    publish(lines, args.append)


if __name__ == "__main__":
    main()
