"""Workers are shared fairly: between tenants, then between a tenant's studies by priority.

Real workers over real HTTP: a tenant's study starts while another tenant's queue is long,
both tenants train at once, a tenant's studies all progress, and priority orders a tenant's
own studies; a queued study says where it stands.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from optuna.trial import FrozenTrial
from servers import (
    REGTUNE,
    env_for,
    regtune,
    serving,
    start_worker,
    stop_process,
    tiny_study,
    trials_of,
    wait_status,
)

# Trials of about a second on a 2-core machine: long enough to overlap, short enough for CI.
STUDY = tiny_study(
    model={"hidden": [16]},
    training={"max_epochs": 6},
    cv={"folds": 3},
    pruner={"kind": "none"},
)


def tokens(url: str, *tenants: str) -> dict[str, str]:
    return {
        t: regtune("token", "create", t, "--tenant", t, database_url=url).stdout.strip()
        for t in tenants
    }


def submit(http: httpx.Client, **spec: Any) -> str:
    response = http.post("/v1/studies", json=STUDY | spec)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def spans(trials: list[FrozenTrial]) -> list[tuple[datetime, datetime]]:
    return [
        (t.datetime_start, t.datetime_complete)
        for t in trials
        if t.datetime_start is not None and t.datetime_complete is not None
    ]


def overlap(a: list[tuple[datetime, datetime]], b: list[tuple[datetime, datetime]]) -> bool:
    """Some trial of ``a`` ran while some trial of ``b`` did."""
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


@pytest.mark.slow
def test_a_tenant_starts_while_another_tenants_queue_is_long(
    database_url: str, tmp_path: Path
) -> None:
    """Tenant A queues three studies, tenant B one after them; two workers of two slots."""
    with serving(database_url, tmp_path / "serve.log", workers=0) as server:
        keys = tokens(database_url, "a", "b")
        with server.client(keys["a"]) as a, server.client(keys["b"]) as b:
            ours = [submit(a, n_trials=6, name=f"a{i}") for i in range(3)]
            theirs = submit(b, n_trials=4, name="b")
            workers = [start_worker(database_url, tmp_path / f"w{i}.log") for i in range(2)]
            try:
                finals = {i: wait_status(a, i, ("completed", "failed")) for i in ours}
                finals[theirs] = wait_status(b, theirs, ("completed", "failed"))
            finally:
                for worker in workers:
                    stop_process(worker)
    assert all(f["status"] == "completed" for f in finals.values()), finals
    first_a = finals[ours[0]]
    b_trials = trials_of(database_url, theirs)
    b_started = min(t.datetime_start for t in b_trials if t.datetime_start is not None)
    a_done = datetime.fromisoformat(first_a["finished_at"]).astimezone().replace(tzinfo=None)
    # B did not wait for A's queue: its first trial began before A's first study completed ...
    assert b_started < a_done, (b_started, a_done)
    # ... and the two tenants trained at the same time.
    a_spans = [s for i in ours for s in spans(trials_of(database_url, i))]
    assert overlap(a_spans, spans(b_trials))
    # Every study got exactly its budget.
    assert [len(trials_of(database_url, i)) for i in ours] == [6, 6, 6]
    assert len(b_trials) == 4


@pytest.mark.slow
def test_priority_orders_a_tenants_studies_and_each_of_them_progresses(tmp_path: Path) -> None:
    """One worker, one tenant: the study of higher priority runs first though submitted last;
    then the two of equal priority share the worker (each starts before the other ends)."""
    url = f"sqlite:///{tmp_path / 'priority.db'}"
    with serving(url, tmp_path / "serve.log", workers=0) as server, server.client() as http:
        older, newer = submit(http, n_trials=4), submit(http, n_trials=4)
        urgent = submit(http, n_trials=3, priority=5)
        worker = start_worker(url, tmp_path / "w.log")
        try:
            finals = {i: wait_status(http, i, ("completed", "failed")) for i in (older, newer)}
            finals[urgent] = wait_status(http, urgent, ("completed",))
        finally:
            stop_process(worker)
    assert all(f["status"] == "completed" for f in finals.values()), finals
    first = {i: min(s for s, _ in spans(trials_of(url, i))) for i in (older, newer, urgent)}
    last = {i: max(e for _, e in spans(trials_of(url, i))) for i in (older, newer, urgent)}
    assert first[urgent] < first[older] and first[urgent] < first[newer]
    # Neither of the equal studies waited for the other to finish.
    assert first[newer] < last[older] and first[older] < last[newer]


def test_a_queued_study_shows_its_place_in_its_tenants_queue(tmp_path: Path) -> None:
    """With no worker: positions by priority then age, per tenant; no worker serves them;
    regtune status says the same."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with serving(url, tmp_path / "serve.log", workers=0) as server:
        keys = tokens(url, "a", "b")
        with server.client(keys["a"]) as a, server.client(keys["b"]) as b:
            first, second = submit(a), submit(a)
            urgent = submit(a, priority=3)
            other = submit(b)
            shown = {i: a.get(f"/v1/studies/{i}").json() for i in (first, second, urgent)}
            shown[other] = b.get(f"/v1/studies/{other}").json()
            status = subprocess.run(
                [*REGTUNE, "status", second],
                env=env_for(url, REGTUNE_URL=server.url, REGTUNE_TOKEN=keys["a"], COLUMNS="120"),
                capture_output=True,
                text=True,
                timeout=60,
            )
    assert {i: s["queue_position"] for i, s in shown.items()} == {
        urgent: 1,
        first: 2,
        second: 3,
        other: 1,  # another tenant's queue is its own
    }
    assert all(s["workers"] == 0 and s["status"] == "queued" for s in shown.values())
    assert shown[urgent]["priority"] == 3
    assert status.returncode == 0, status.stderr
    assert "none yet: number 3 in its tenant's queue" in status.stdout, status.stdout
