"""Load on the status endpoint: ``GET /v1/studies/{id}`` of a study with 10,000 trials.

Starts ``regtune serve`` (one embedded worker) on a fresh SQLite file, fills one study with
10,000 finished trials (with the per-fold attributes a real trial records), submits a second
study that the worker trains during the measurement, then runs N concurrent HTTP clients on
loopback for a fixed time and reports requests per second and p50/p99 latency.

    .venv/bin/python benchmarks/load_status.py --append BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import optuna
from optuna.distributions import FloatDistribution, IntDistribution

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from provenance import append_section, command_line, git_commit, machine
from servers import Server  # the test suite's real-process helpers

FILL_BATCH = 500


def fill(storage_url: str, study_name: str, n: int, seed: int = 0) -> None:
    """Add ``n`` completed trials shaped like regtune's (five params, fold scores, curves)."""
    rng = np.random.default_rng(seed)
    study = optuna.load_study(study_name=study_name, storage=storage_url)
    distributions = {
        "weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        "l1": FloatDistribution(1e-7, 1e-3, log=True),
        "dropout": FloatDistribution(0.0, 0.7),
        "bn_momentum": FloatDistribution(0.01, 0.99),
        "patience": IntDistribution(2, 20),
    }
    for start in range(0, n, FILL_BATCH):
        batch = []
        for _ in range(min(FILL_BATCH, n - start)):
            folds = rng.uniform(0.9, 0.99, 5).tolist()
            curve = np.round(np.exp(-np.linspace(0, 3, 30)), 4).tolist()
            batch.append(
                optuna.trial.create_trial(
                    value=float(np.mean(folds)),
                    params={
                        "weight_decay": float(10 ** rng.uniform(-6, -1)),
                        "l1": float(10 ** rng.uniform(-7, -3)),
                        "dropout": float(rng.uniform(0, 0.7)),
                        "bn_momentum": float(rng.uniform(0.01, 0.99)),
                        "patience": int(rng.integers(2, 21)),
                    },
                    distributions=distributions,
                    user_attrs={
                        "fold_scores": folds,
                        "cv_mean": float(np.mean(folds)),
                        "cv_std": float(np.std(folds)),
                        "diagnosis": "converged",
                        "train_loss": [curve] * 5,
                        "val_loss": [curve] * 5,
                    },
                    intermediate_values={e: float(np.mean(folds)) for e in range(30)},
                )
            )
        study.add_trials(batch)


async def hammer(url: str, clients: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def client() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await http.get(url)
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--append", type=Path, help="append the result to this markdown file")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/load.db"
        server = Server(database_url, Path(tmp) / "serve.log", workers=1)
        try:
            with server.client() as http:
                # Cancelled at once: the filled study is only read, never trained.
                big = http.post(
                    "/v1/studies",
                    json={"dataset": "builtin:wine", "n_trials": args.trials, "name": "filled"},
                ).json()
                http.post(f"/v1/studies/{big['id']}/cancel")
                t0 = time.perf_counter()
                fill(database_url, f"regtune-{big['id']}", args.trials)
                fill_s = time.perf_counter() - t0
                busy = http.post(
                    "/v1/studies",
                    json={
                        "dataset": "builtin:digits",
                        "n_trials": 1000,
                        "name": "training",
                        "training": {"max_epochs": 50},
                    },
                ).json()
                while http.get(f"/v1/studies/{busy['id']}").json()["trials"]["running"] == 0:
                    time.sleep(0.2)
                status = http.get(f"/v1/studies/{big['id']}").json()
                assert sum(status["trials"].values()) >= args.trials, status["trials"]
            url = f"{server.url}/v1/studies/{big['id']}"
            asyncio.run(hammer(url, args.clients, 2.0))  # warm-up
            latencies = asyncio.run(hammer(url, args.clients, args.seconds))
            with server.client() as http:
                trained = http.get(f"/v1/studies/{busy['id']}").json()["trials"]
        finally:
            server.stop()

    latencies.sort()
    rps = len(latencies) / args.seconds
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
    commit = git_commit()
    lines = [
        f"\n## Status endpoint under load ({datetime.now(UTC):%Y-%m-%d})\n",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}; commit `{commit}`; SQLite (WAL), one "
        f"uvicorn process, one embedded worker training digits meanwhile",
        f"- study with {args.trials} finished trials (filled in {fill_s:.0f} s); "
        f"{args.clients} concurrent clients on loopback (httpx, one process) for "
        f"{args.seconds:.0f} s",
        "",
        "| requests | req/s | p50 ms | p99 ms | worker trials meanwhile |",
        "|---:|---:|---:|---:|---|",
        f"| {len(latencies)} | {rps:.0f} | {p50:.1f} | {p99:.1f} | {trained} |",
        "",
    ]
    print("\n".join(lines))
    if args.append:
        append_section(args.append, "\n".join(lines))


if __name__ == "__main__":
    main()
