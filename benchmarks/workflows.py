"""The reference workload as a user runs it, side by side: the textbook loop, ``regtune tune``,
and a study served by ``regtune serve``.

Reference workload: digits, MLP 64-256-256-10 with BatchNorm and dropout, Adam lr 1e-3,
batch 64, 5 folds, 20 fixed epochs (patience 21: no early stopping), 8 trials, no pruning;
the regularization is searched in the default space.

  textbook  the loop from the tutorials (``engines.textbook``: an Optuna-style objective, a
            StandardScaler and a DataLoader per fold, nn.Sequential, torch.optim.Adam, folds in
            turn) over the *same configurations* the served study drew, at 1 and at all
            threads; the faster counts;
  optuna    the peer to beat: Optuna's own multi-process form, one 1-thread process per core
            (``python workflows.py --peer JOURNAL SPEC``), each calling ``study.optimize`` on
            one study over a shared JournalStorage with the textbook objective (its
            ``trial.suggest_*`` calls over the default space); the served study's
            configurations are enqueued first (``study.enqueue_trial``), so it trains the very
            same trials; the clock runs from starting the processes (each imports torch, as a
            user's would) to the last one's exit;
  tune      ``regtune tune --spec FILE --json`` as a subprocess, with its defaults (one searcher
            process per core): start-up, search, and the refit of the best trial;
  serve     ``regtune serve`` on a fresh SQLite file with its default workers, started before
            the clock (a service is long-lived); the clock runs from the POST of the study to
            its ``completed`` status, which includes the refit of the best trial.

    .venv/bin/python benchmarks/workflows.py --append BENCHMARKS.md
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import optuna
import torch
from engines import Workload, textbook
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from provenance import (
    ROOT,
    benchmark_parser,
    command_line,
    git_commit,
    machine,
    markdown_table,
    publish,
)

from trainer import CVProtocol, StudySpec, TrialConfig, load_builtin, usable_cores

REGTUNE = [sys.executable, "-m", "service"]
PEER_PARAMS = ("weight_decay", "l1", "dropout", "bn_momentum")


def reference_spec(trials: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "reference",
        "dataset": "builtin:digits",
        "n_trials": trials,
        "seed": 0,
        "model": {"kind": "mlp", "hidden": [256, 256], "batch_norm": True},
        "training": {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "max_epochs": epochs},
        "search_space": {"patience": epochs + 1},
        "cv": {"folds": 5},
        "pruner": {"kind": "none"},
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tune(spec_file: Path) -> tuple[float, float]:
    """(wall seconds, best CV accuracy) of ``regtune tune`` as a user runs it."""
    start = time.perf_counter()
    done = subprocess.run(
        [*REGTUNE, "tune", "--spec", str(spec_file), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    return wall, float(json.loads(done.stdout)["best"]["value"])


def run_served(spec: dict[str, Any], directory: Path) -> tuple[float, float, list[dict]]:
    """(wall seconds, best CV accuracy, the trials' configurations) of a served study."""
    port = free_port()
    env = os.environ | {"REGTUNE_DATABASE_URL": f"sqlite:///{directory / 'served.db'}"}
    log = (directory / "serve.log").open("wb")
    server = subprocess.Popen(
        [*REGTUNE, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("regtune serve did not start; see serve.log")
                time.sleep(0.2)
            time.sleep(5)  # the workers import torch and connect before the clock starts
            start = time.perf_counter()
            study = http.post("/v1/studies", json=spec).json()
            while (body := http.get(f"/v1/studies/{study['id']}").json())["status"] not in (
                "completed",
                "failed",
            ):
                time.sleep(0.1)
            wall = time.perf_counter() - start
            if body["status"] != "completed":
                raise RuntimeError(f"the served study failed: {body.get('error')}")
            page = http.get(f"/v1/studies/{study['id']}/trials", params={"limit": 100}).json()
            detail = [
                http.get(f"/v1/studies/{study['id']}/trials/{t['number']}").json()
                for t in page["items"]
            ]
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
        log.close()
    configs = [d["config"] for d in detail]
    return wall, float(body["best"]["value"]), configs


def run_textbook(spec: dict[str, Any], configs: list[dict]) -> tuple[float, int, float]:
    """(wall seconds, threads, best CV accuracy) of the textbook loop at its best thread count."""
    study_spec = StudySpec.model_validate(spec)
    data = load_builtin(study_spec.dataset)
    protocol = CVProtocol.of(study_spec, data)
    trial_configs = [TrialConfig.from_values(study_spec, c) for c in configs]
    best: tuple[float, int, float] | None = None
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        means = textbook(Workload(data, protocol), trial_configs)
        wall = time.perf_counter() - start
        print(f"textbook threads={threads}: {wall:.1f} s, best CV {max(means):.4f}", flush=True)
        if best is None or wall < best[0]:
            best = (wall, threads, max(means))
    assert best is not None
    return best


def peer_worker(journal: str, spec_file: str, trials: int) -> None:
    """One process of Optuna's multi-process form: 1 thread, ``study.optimize`` on the shared
    journal, the textbook objective with its own ``suggest`` calls (enqueued values come back)."""
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = json.loads(Path(spec_file).read_text())
    study_spec = StudySpec.model_validate(spec)
    data = load_builtin(study_spec.dataset)
    work = Workload(data, CVProtocol.of(study_spec, data))
    storage = JournalStorage(JournalFileBackend(journal))
    study = optuna.load_study(study_name="peer", storage=storage)

    # The ranges the served study searched (the default space), each drawn by Optuna's own call.
    space = {name: getattr(study_spec.search_space, name) for name in PEER_PARAMS}

    def objective(trial: optuna.Trial) -> float:
        values = {
            name: trial.suggest_float(name, r.low, r.high, log=r.log) for name, r in space.items()
        }
        values["patience"] = spec["search_space"]["patience"]  # fixed: no early stopping
        return textbook(work, [TrialConfig.from_values(study_spec, values)])[0]

    study.optimize(objective, n_trials=trials)


def run_peer(
    spec: dict[str, Any], configs: list[dict], processes: int, directory: Path
) -> tuple[float, float]:
    """(wall seconds, best CV accuracy) of Optuna's multi-process form on ``configs``."""
    journal, spec_file = directory / "peer.journal", directory / "peer-spec.json"
    spec_file.write_text(json.dumps(spec))
    study = optuna.create_study(
        study_name="peer",
        direction="maximize",
        storage=JournalStorage(JournalFileBackend(str(journal))),
    )
    for config in configs:
        study.enqueue_trial({name: config[name] for name in PEER_PARAMS})
    share = [len(configs) // processes + (i < len(configs) % processes) for i in range(processes)]
    start = time.perf_counter()
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--peer", str(journal), str(spec_file), str(n)],
            cwd=ROOT,
        )
        for n in share
    ]
    if any(worker.wait() != 0 for worker in workers):
        raise RuntimeError("an Optuna peer process failed")
    wall = time.perf_counter() - start
    return wall, float(study.best_value)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--peer":
        peer_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = benchmark_parser(__doc__)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--processes", type=int, default=usable_cores(), help="the Optuna peer's processes"
    )
    parser.add_argument(
        "--no-textbook", action="store_true", help="leave out the one-process textbook row"
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    commit, started = git_commit(), datetime.now(UTC)
    spec = reference_spec(args.trials, args.epochs)
    with tempfile.TemporaryDirectory(prefix="regtune-bench-") as tmp:
        directory = Path(tmp)
        spec_file = directory / "spec.json"
        spec_file.write_text(json.dumps(spec))
        served_wall, served_best, configs = run_served(spec, directory)
        print(f"serve: {served_wall:.1f} s, best CV {served_best:.4f}", flush=True)
        tune_wall, tune_best = run_tune(spec_file)
        print(f"tune: {tune_wall:.1f} s, best CV {tune_best:.4f}", flush=True)
        peer_wall, peer_best = run_peer(spec, configs, args.processes, directory)
        print(f"optuna ×{args.processes}: {peer_wall:.1f} s, best CV {peer_best:.4f}", flush=True)
    fold_epochs = args.trials * 5 * args.epochs
    rows = [
        (
            f"Optuna's multi-process form ({args.processes} 1-thread processes, JournalStorage), "
            f"the served study's {args.trials} configurations",
            peer_wall,
            peer_best,
        ),
        ("`regtune tune --spec FILE --json`", tune_wall, tune_best),
        ("`regtune serve`, POST → completed", served_wall, served_best),
    ]
    if not args.no_textbook:
        text_wall, threads, text_best = run_textbook(spec, configs)
        rows.append((f"textbook loop in one process ({threads} thread(s))", text_wall, text_best))
    lines = [
        f"\n## Workflows: Optuna's multi-process form vs `regtune tune` vs `regtune serve` "
        f"({started:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command_line()}`",
        f"- device: CPU: {machine()}; commit `{commit}`",
        f"- workload: digits, MLP 64-256-256-10 (BN, dropout), Adam lr 1e-3, batch 64, 5 folds, "
        f"{args.epochs} fixed epochs, {args.trials} trials, no pruning = {fold_epochs} "
        "fold-epochs; tune and serve also refit the best trial",
        "",
    ]
    lines += markdown_table(
        ["run", "wall s", "fold-epochs/s", "× Optuna peer", "best CV acc"],
        "lrrrr",
        (
            [
                name,
                f"{wall:.1f}",
                f"{fold_epochs / wall:.1f}",
                f"{peer_wall / wall:.2f}",
                f"{best:.4f}",
            ]
            for name, wall, best in rows
        ),
    )
    publish(lines, args.append)


if __name__ == "__main__":
    main()
