"""Fair share of the workers: the share each tenant gets, and what a claim costs.

Five tenants hold 20, 15, 10, 4 and 1 of 50 active studies (each with a budget larger than the
run can spend). Real workers (``regtune worker``, one process per core) train for a minute;
then the share of trials each tenant started is counted beside two references: a fifth each
(fair between tenants, the policy) and the tenant's share of the studies (what serving the
studies alike would give; oldest first would give the first tenant everything). Then, on the
database as the run left it (the 50 studies, their trials), the time of a worker's claim (the
fair pick, the move to running, the re-read) and of its periodic sweep for dead workers'
trials, each repeated.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from provenance import benchmark_parser, command_line, git_commit, machine, markdown_table, publish
from sqlalchemy import select

from service.settings import Settings
from service.store import lifecycle, scheduling, trials
from service.store.db import Database
from service.store.tables import StudyRecord
from service.work.worker import Worker
from trainer import StudySpec

TENANTS = {"t1": 20, "t2": 15, "t3": 10, "t4": 4, "t5": 1}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def trained(
    path: Path, spec: StudySpec, tenants: dict[str, int], seconds: float
) -> tuple[Counter[str], Settings]:
    """Submit ``tenants[t]`` studies for each tenant t on a new SQLite database, run
    ``regtune worker --device cpu`` (a process per core) on it for ``seconds``: the trials
    each tenant started."""
    settings = Settings(database_url=f"sqlite:///{path}")
    db = Database(settings)
    db.migrate()
    storage = trials.make_storage(settings)
    for tenant, count in tenants.items():
        for i in range(count):
            lifecycle.submit(db, storage, tenant, spec.model_copy(update={"name": f"{tenant}-{i}"}))
    env = os.environ | {"REGTUNE_DATABASE_URL": settings.database_url, "REGTUNE_THREADS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "service", "worker", "--device", "cpu"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(seconds)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(120)
    with db.read() as session:
        tenant_of = dict(session.execute(select(StudyRecord.optuna_id, StudyRecord.tenant)).all())
        per_study = session.scalars(select(trials.trials.c.study_id)).all()
    db.dispose()
    storage.engine.dispose()
    return Counter(tenant_of[study_id] for study_id in per_study), settings


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--claims", type=int, default=300)
    args = parser.parse_args()
    started, commit = datetime.now(UTC), git_commit()
    spec = StudySpec.model_validate(
        {
            "dataset": "builtin:wine",
            "n_trials": 10_000,  # more than a minute can spend, alone too
            "model": {"hidden": [16]},
            "training": {"max_epochs": 3},
            "cv": {"folds": 2},
            "pruner": {"kind": "none"},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The reference: the same workers on one study alone (no switching at all).
        alone, _ = trained(Path(tmp) / "alone.db", spec, {"t1": 1}, args.seconds)
        started_trials, settings = trained(Path(tmp) / "fair.db", spec, TENANTS, args.seconds)
        total = sum(started_trials.values())
        db = Database(settings)

        claimer = Worker(settings)
        claimer.connect()
        claims, sweeps = [], []
        for _ in range(args.claims):
            claimer.swept = time.monotonic()  # the claim alone: the sweep is timed apart
            t0 = time.perf_counter()
            claimer.claim()
            claims.append(time.perf_counter() - t0)
            claimer.swept = -float("inf")
            t0 = time.perf_counter()
            claimer.sweep()
            sweeps.append(time.perf_counter() - t0)
        with db.read() as session:
            active = len(scheduling.candidates(session))
        claimer.unregister()
        n_trials = total

    lines = [
        f"\n## Fair share of the workers, 50 studies of 5 tenants ({started:%Y-%m-%d %H:%M} UTC)\n",
        f"- command: `{command_line()}`",
        f"- device: CPU: {machine()}; commit `{commit}`",
        f"- workload: `regtune worker --device cpu` (one 1-thread process per core) for "
        f"{args.seconds:.0f} s on SQLite; 50 active studies (wine, MLP 16, 2 folds, 3 epochs, "
        "budget 10,000 each) held by five tenants as 20, 15, 10, 4 and 1 studies",
        "",
    ]
    lines += markdown_table(
        ["tenant", "studies", "trials started", "share", "fair share", "share by studies"],
        "lrrrrr",
        (
            [
                tenant,
                count,
                started_trials[tenant],
                f"{started_trials[tenant] / max(total, 1):.0%}",
                f"{1 / len(TENANTS):.0%}",
                f"{count / sum(TENANTS.values()):.0%}",
            ]
            for tenant, count in TENANTS.items()
        ),
    )
    lines += [
        "",
        f"All trials in the minute: {total} shared out, {sum(alone.values())} by the same workers "
        f"on one study alone (no switching): the switching costs "
        f"{1 - total / max(sum(alone.values()), 1):.0%} of the throughput on trials this short.",
        "",
        f"Then, on that database ({active} active studies, {n_trials} trials), "
        f"{args.claims} times each:",
        "",
    ]
    lines += markdown_table(
        ["step", "p50 ms", "p99 ms", "max ms"],
        "lrrr",
        (
            [
                name,
                f"{1000 * statistics.median(v):.1f}",
                f"{1000 * percentile(v, 0.99):.1f}",
                f"{1000 * max(v):.1f}",
            ]
            for name, v in (
                ("claim (fair pick, move to running, re-read)", claims),
                ("sweep (dead workers' trials, idle studies)", sweeps),
            )
        ),
    )
    publish(lines, args.append)


if __name__ == "__main__":
    main()
