"""Load: 200 pollers on loopback against ``regtune serve`` while two workers train.

A load script, not a test. It starts ``regtune serve`` on SQLite with two embedded workers,
with one API token (clients send it, so authentication is part of every request), a study of
10,000 finished trials (with the per-fold attributes a real trial records) and a study that the
two workers train during the whole measurement. Then N clients (asyncio, one keep-alive
``httpx.AsyncClient`` each, all in this process) behave like pollers: each asks for its study's
status (``GET /v1/studies/{id}``) about once a second (0.8–1.2 s apart) and lists its first
page of trials (``GET /v1/studies/{id}/trials?limit=50``) about every 5 s (4–6 s apart); a
poller sends its next request only after the previous answer. Half the clients poll the
10,000-trial study, half the study being trained. Every client is built and connected before
the clock starts; then a warm-up, then the measured window.

Per endpoint it reports requests, throughput, p50/p90/p99/max latency and errors (non-2xx,
exceptions and timeouts), the server's own share (``Server-Timing``), with ``--capture`` the
latency on the loopback wire (tcpdump, see ``wire.py``), the CPU time that this load
generator, the API process and the workers used meanwhile, and the machine's load average.

Filling the 10,000 trials takes minutes; ``--seeded PATH`` keeps the filled database there
and copies it for every later run (``make load`` does this and captures):

    .venv/bin/python benchmarks/load_status.py --seeded /tmp/regtune-load-seed.db \\
        --capture --append BENCHMARKS.md
"""

from __future__ import annotations

import asyncio
import csv
import gc
import os
import random
import shutil
import sqlite3
import ssl
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import optuna
import uvloop
from optuna.distributions import FloatDistribution, IntDistribution

# This tree's service (not whichever one is installed), and the test suite's helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import wire
from provenance import append_section, benchmark_parser, command_line, git_commit, machine
from servers import Server, regtune  # the test suite's real-process helpers

from service.settings import Settings

FILL_BATCH = 500
TENANT = "load"
BIG = "filled"
STATUS_TARGET_P99_MS = 100.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def new_token(database_url: str, name: str) -> str:
    made = regtune("token", "create", name, "--tenant", TENANT, database_url=database_url)
    if made.returncode != 0:
        raise RuntimeError(f"regtune token create failed:\n{made.stdout}\n{made.stderr}")
    return made.stdout.strip().splitlines()[0]


def seed(path: Path, trials: int) -> float:
    """A database at ``path`` with the tenant's token and a study of ``trials`` finished trials
    (cancelled at once: it is only read, never trained). Returns the seconds the fill took."""
    url = f"sqlite:///{path}"
    token = new_token(url, "seed")
    server = Server(url, path.with_suffix(".seed.log"), workers=0)
    try:
        with server.client(token) as http:
            big = http.post(
                "/v1/studies", json={"dataset": "builtin:wine", "n_trials": trials, "name": BIG}
            )
            big.raise_for_status()
            http.post(f"/v1/studies/{big.json()['id']}/cancel").raise_for_status()
    finally:
        server.stop()
    t0 = time.perf_counter()
    fill(url, f"{BIG}-{big.json()['id']}", trials)  # the spec's name and the id
    return time.perf_counter() - t0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, from /proc (0 once it is gone)."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields_[11]) + int(fields_[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@dataclass
class Endpoint:
    latencies: list[float] = field(default_factory=list)
    server: list[float] = field(default_factory=list)  # the server's own share (Server-Timing)
    wire: list[float] = field(default_factory=list)  # request to response packet (--capture)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())


@dataclass
class Load:
    """Samples by (endpoint, study), only those started inside the measured window."""

    start: float
    end: float
    samples: dict[tuple[str, str], Endpoint] = field(default_factory=lambda: defaultdict(Endpoint))
    lag: list[float] = field(default_factory=list)  # the generator's own event-loop delays
    # (wall-clock start, endpoint, study, seconds, server seconds, client port, error) per
    # request: lines up with a packet capture (``--trace``).
    trace: list[tuple[float, str, str, float, float | None, int, str]] = field(default_factory=list)

    def record(
        self,
        key: tuple[str, str],
        started: float,
        elapsed: float,
        error: str | None,
        server_s: float | None = None,
        origin: tuple[float, int] = (0.0, 0),
    ) -> None:
        """``origin``: the request's wall-clock start and client port, for ``trace``."""
        if not self.start <= started < self.end:
            return
        wall, port = origin
        self.trace.append((wall, *key, elapsed, server_s, port, error or ""))
        if error is None:
            self.samples[key].latencies.append(elapsed)
            if server_s is not None:
                self.samples[key].server.append(server_s)
        else:
            self.samples[key].errors[error] += 1


def server_time(header: str) -> float | None:
    """Seconds from ``Server-Timing: app;dur=<ms>``."""
    for metric in header.split(","):
        name, _, rest = metric.strip().partition(";dur=")
        if name == "app" and rest:
            return float(rest) / 1000
    return None


def new_client(
    base_url: str, token: str, timeout_s: float, tls: ssl.SSLContext
) -> httpx.AsyncClient:
    """One poller's keep-alive client. ``tls`` is shared: httpx builds a TLS context per
    client otherwise (~27 ms of CPU each, even for plain HTTP), and 200 of them blocked the
    generator's event loop for over 5 s, longer than the warm-up, so the first measured
    requests waited behind it. That stall was most of the p99 recorded before this fix."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout_s,
        verify=tls,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


async def poller(
    index: int,
    http: httpx.AsyncClient,
    study: tuple[str, str],
    load: Load,
    stop_at: float,
) -> None:
    """One client: status about every second, the first trial page about every 5 s."""
    kind, study_id = study
    rng = random.Random(index)
    loop = asyncio.get_running_loop()

    async def get(endpoint: str, path: str) -> None:
        wall, started = time.time(), time.perf_counter()
        error, server_s, port = None, None, 0
        try:
            response = await http.get(path)
            if not response.is_success:
                error = f"HTTP {response.status_code}"
            server_s = server_time(response.headers.get("server-timing", ""))
            port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        elapsed = time.perf_counter() - started
        load.record((endpoint, kind), started, elapsed, error, server_s, origin=(wall, port))

    now = loop.time()
    next_status, next_list = now + rng.uniform(0, 1), now + rng.uniform(0, 5)
    while True:
        due = min(next_status, next_list)
        if due >= stop_at:
            return
        await asyncio.sleep(max(0.0, due - loop.time()))
        if next_status <= next_list:
            await get("status", f"/v1/studies/{study_id}")
            next_status = max(next_status + rng.uniform(0.8, 1.2), loop.time())
        else:
            await get("trials", f"/v1/studies/{study_id}/trials?limit=50")
            next_list = max(next_list + rng.uniform(4.0, 6.0), loop.time())


LAG_PROBE_S = 0.01


async def lag_probe(load: Load, stop_at: float) -> None:
    """How late this process's event loop wakes a 10 ms sleep: the part of every latency
    above that the load generator, not the server, adds."""
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        started = time.perf_counter()
        await asyncio.sleep(LAG_PROBE_S)
        if load.start <= started < load.end:
            load.lag.append(max(0.0, time.perf_counter() - started - LAG_PROBE_S))


async def run_load(
    base_url: str,
    token: str,
    studies: list[tuple[str, str]],
    clients: int,
    warmup_s: float,
    seconds: float,
    timeout_s: float,
) -> Load:
    loop = asyncio.get_running_loop()
    tls = ssl.create_default_context()
    pool = [new_client(base_url, token, timeout_s, tls) for _ in range(clients)]
    try:
        # Every client connected (and answered once) before the clock starts.
        opened = await asyncio.gather(*(http.get("/healthz") for http in pool))
        if failed := [r.status_code for r in opened if not r.is_success]:
            raise RuntimeError(f"{len(failed)} clients could not connect: {failed[:5]}")
        t0 = time.perf_counter()
        load = Load(start=t0 + warmup_s, end=t0 + warmup_s + seconds)
        stop_at = loop.time() + warmup_s + seconds
        await asyncio.gather(
            lag_probe(load, stop_at),
            *(
                poller(i, http, studies[i % len(studies)], load, stop_at)
                for i, http in enumerate(pool)
            ),
        )
    finally:
        await asyncio.gather(*(http.aclose() for http in pool))
    return load


def add_wire(load: Load, seen: wire.Wire) -> None:
    """Each measured request's latency on the wire, beside the client's."""
    for wall, endpoint, kind, _, _, port, error in load.trace:
        if not error and (latency := seen.latency(wall, port)) is not None:
            load.samples[(endpoint, kind)].wire.append(latency)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_values:
        return float("nan")
    rank = max(1, int(np.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1] * 1000


def rows(load: Load) -> list[tuple[str, str, Endpoint]]:
    merged: dict[str, Endpoint] = defaultdict(Endpoint)
    for (endpoint, _), samples in load.samples.items():
        merged[endpoint].latencies += samples.latencies
        merged[endpoint].server += samples.server
        merged[endpoint].wire += samples.wire
        merged[endpoint].errors += samples.errors
    out = []
    for endpoint in ("status", "trials"):
        out.append((endpoint, "both", merged[endpoint]))
        for kind in ("filled", "training"):
            out.append((endpoint, kind, load.samples[(endpoint, kind)]))
    return out


def table(load: Load, seconds: float) -> list[str]:
    lines = [
        "| endpoint | study | requests | req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| server p50 ms | server p99 ms | wire p99 ms | wire max ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for endpoint, kind, samples in rows(load):
        values = sorted(samples.latencies)
        errors = sum(samples.errors.values())
        detail = f" ({', '.join(f'{k}: {n}' for k, n in samples.errors.items())})" if errors else ""
        name = "`GET /v1/studies/{id}`" if endpoint == "status" else "`GET …/trials?limit=50`"
        bold = "**" if kind == "both" else ""
        lines.append(
            f"| {name} | {kind} | {samples.requests} | {samples.requests / seconds:.1f} | "
            f"{percentile(values, 50):.1f} | {percentile(values, 90):.1f} | "
            f"{bold}{percentile(values, 99):.1f}{bold} | "
            f"{(values[-1] * 1000 if values else float('nan')):.1f} | "
            f"{percentile(sorted(samples.server), 50):.1f} | "
            f"{percentile(sorted(samples.server), 99):.1f} | "
            f"{percentile(sorted(samples.wire), 99):.1f} | "
            f"{(max(samples.wire) * 1000 if samples.wire else float('nan')):.1f} | "
            f"{errors}{detail} |"
        )
    return lines


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--trials", type=int, default=10_000, help="trials of the filled study")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured time first")
    parser.add_argument("--workers", type=int, default=2, help="embedded training workers")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout, seconds")
    parser.add_argument("--seeded", type=Path, help="keep/reuse the filled database here")
    parser.add_argument("--label", default="", help="a note for the section's title")
    parser.add_argument(
        "--capture",
        action="store_true",
        help="also time every request on the loopback wire with tcpdump (needs root)",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        help="write every measured request here (CSV: wall-clock start, endpoint, study, "
        "seconds, server seconds, client port, error), to line up with a packet capture",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    commit = git_commit()
    with tempfile.TemporaryDirectory() as tmp:
        db_path = Path(tmp) / "load.db"
        fill_note = ""
        if args.seeded is not None and args.seeded.exists():
            shutil.copyfile(args.seeded, db_path)
            fill_note = f"copied from `{args.seeded}`"
        else:
            fill_s = seed(db_path, args.trials)
            fill_note = f"filled in {fill_s:.0f} s"
            if args.seeded is not None:  # through SQLite: the WAL's last pages too
                with sqlite3.connect(db_path) as source, sqlite3.connect(args.seeded) as target:
                    source.backup(target)
        database_url = f"sqlite:///{db_path}"
        token = new_token(database_url, "load-run")
        server = Server(database_url, Path(tmp) / "serve.log", workers=args.workers)
        try:
            with server.client(token) as http:
                listed = http.get("/v1/studies").json()
                big_id = next(s["id"] for s in listed if s["name"] == BIG)
                big = http.get(f"/v1/studies/{big_id}").json()
                assert sum(big["trials"].values()) >= args.trials, big["trials"]
                busy = http.post(
                    "/v1/studies",
                    json={
                        "dataset": "builtin:digits",
                        "n_trials": 1000,
                        "name": "training",
                        "training": {"max_epochs": 50},
                    },
                )
                busy.raise_for_status()
                busy_id = busy.json()["id"]
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    running = http.get(f"/v1/studies/{busy_id}").json()["trials"]["running"]
                    if running >= args.workers:
                        break
                    time.sleep(0.5)
                else:
                    raise RuntimeError(f"only {running} of {args.workers} workers training")
                before = http.get(f"/v1/studies/{busy_id}").json()["trials"]
            workers = children(server.proc.pid)
            load_before = os.getloadavg()
            cpu0 = {pid: cpu_seconds(pid) for pid in [server.proc.pid, *workers]}
            own0 = time.process_time()
            wall0 = time.perf_counter()
            # No collection in the generator while it measures: a full one of its heap
            # (Optuna, torch, httpx) took ~130 ms, which every latency in flight then showed.
            gc.collect()
            gc.disable()
            with (
                wire.capture(urlsplit(server.url).port or 80, Path(tmp) / "load.pcap")
                if args.capture
                else nullcontext([])
            ) as captured:
                load = uvloop.run(
                    run_load(
                        server.url,
                        token,
                        [("filled", big_id), ("training", busy_id)],
                        args.clients,
                        args.warmup,
                        args.seconds,
                        args.timeout,
                    )
                )
            wall = time.perf_counter() - wall0
            gc.enable()
            if captured:
                add_wire(load, captured[0])
            own = time.process_time() - own0
            cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in cpu0}
            load_after = os.getloadavg()
            with server.client(token) as http:
                after = http.get(f"/v1/studies/{busy_id}").json()["trials"]
        finally:
            server.stop()

    status = next(s for e, k, s in rows(load) if e == "status" and k == "both")
    every = [s for e, k, s in rows(load) if k == "both"]
    status_p99 = percentile(sorted(status.latencies), 99)
    errors = sum(sum(s.errors.values()) for s in every)
    met = status_p99 < STATUS_TARGET_P99_MS and errors == 0
    nice = getattr(Settings(), "worker_nice", 0)  # REGTUNE_WORKER_NICE, as the server reads it
    worker_cpu = sum(cpu[pid] for pid in workers)
    when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    title = f"Load: {args.clients} pollers on status and trials ({when})"
    if args.label:
        title += f" — {args.label}"
    lines = [
        f"## {title}\n",
        f"- command: `{command_line()}`",
        f"- machine: {machine()}; commit `{commit}`",
        f"- server: `regtune serve --workers {args.workers}` on SQLite (WAL), one uvicorn "
        f"process (uvloop, httptools); worker niceness {nice}; one API token (every request "
        f"authenticated)",
        f"- studies: {args.trials} finished trials ({fill_note}); a digits study trained "
        f"by the {args.workers} workers meanwhile (trials {before} before, {after} after)",
        f"- clients: {args.clients} pollers (asyncio, one keep-alive httpx client each, one "
        f"process), half on each study (filled, training); status every 0.8–1.2 s, first page "
        f"of 50 trials every 4–6 s, each after the previous answer; timeout {args.timeout:.0f} s; "
        f"{args.warmup:.0f} s warm-up, then {args.seconds:.0f} s measured",
        f"- CPU used over the {wall:.0f} s run: load generator {own:.1f} s "
        f"({100 * own / wall:.0f}% of a core), API process "
        f"{cpu[server.proc.pid]:.1f} s ({100 * cpu[server.proc.pid] / wall:.0f}%), "
        f"{len(workers)} workers {worker_cpu:.1f} s ({100 * worker_cpu / wall:.0f}%); "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after",
        f"- the load generator's event loop woke a 10 ms sleep late by "
        f"{percentile(sorted(load.lag), 50):.1f} ms at p50, "
        f"{percentile(sorted(load.lag), 99):.1f} ms at p99, "
        f"{max(load.lag, default=0) * 1000:.0f} ms at most (that much of a latency below can "
        f"be the client's own); the server's share of each request is its `Server-Timing` "
        f"header (app entry to response headers)",
        "- wire: "
        + (
            "tcpdump on loopback timed each request from its first packet to the response's "
            "first packet, the server's whole share (its socket queue, its event loop, the "
            "application) without anything the load generator adds; "
            f"{sum(len(s.wire) for s in every)} of {sum(len(s.latencies) for s in every)} "
            "answered requests matched to their packets"
            if args.capture
            else "not captured (run with `--capture`)"
        ),
        "",
        *table(load, args.seconds),
        "",
        f"Target (status p99 < {STATUS_TARGET_P99_MS:.0f} ms, zero errors): "
        f"**{'met' if met else 'not met'}** (status p99 {status_p99:.1f} ms, {errors} errors).",
        "",
    ]
    print("\n".join(lines))
    if args.trace:
        with args.trace.open("w", newline="") as out:
            csv.writer(out).writerows(load.trace)
    if args.append:
        append_section(args.append, "\n".join(lines))


if __name__ == "__main__":
    main()
