"""The server's share of each request, read off the loopback wire with tcpdump.

The kernel timestamps every packet. From a request's first data packet (client → server) to
the response's first data packet (server → client) is everything the server did: the request
waiting in its socket, waiting for its event loop to run, and the application itself. None
of the load generator's own delays (its event loop, its HTTP client) is in it, so a latency
tail that the clients see but the wire does not is the generator's.

Pairing is by connection: each client keeps one connection and has one request in flight on
it, so a connection's packets alternate request, response. A load generator's measured
request (its wall-clock start and its local port) is matched to the first request packet on
that port at or after its start.
"""

from __future__ import annotations

import bisect
import re
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# `tcpdump -tt -nn` prints e.g.
# 1795466463.048965 IP 127.0.0.1.56534 > 127.0.0.1.57731: Flags [P.], seq 1:273, ..., length 272
PACKET = re.compile(r"^(\d+\.\d+) IP6? [\d.:a-f]+\.(\d+) > [\d.:a-f]+\.(\d+): .*length (\d+)")
# A packet may be timestamped a little before the client's own clock read, never much.
CLOCK_SLACK_S = 0.0005


@dataclass
class Wire:
    """Per client port, the requests seen on the wire: (request packet time, latency)."""

    requests: dict[int, list[tuple[float, float]]] = field(default_factory=dict)

    def latency(self, wall_start: float, port: int) -> float | None:
        """Wire latency of the request a client started at ``wall_start`` on ``port``."""
        seen = self.requests.get(port, [])
        i = bisect.bisect_left(seen, (wall_start - CLOCK_SLACK_S, 0.0))
        return seen[i][1] if i < len(seen) else None


def parse(lines: Iterator[str], server_port: int) -> Wire:
    """Pair each connection's request packets with the first response packet after them."""
    pending: dict[int, float] = {}
    requests: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for line in lines:
        match = PACKET.match(line)
        if match is None or int(match[4]) == 0:  # a bare ACK carries no request or response
            continue
        at, source, target = float(match[1]), int(match[2]), int(match[3])
        if target == server_port:
            pending.setdefault(source, at)  # a request split over packets starts at its first
        elif source == server_port and target in pending:
            sent = pending.pop(target)
            requests[target].append((sent, at - sent))
    return Wire({port: sorted(seen) for port, seen in requests.items()})


@contextmanager
def capture(server_port: int, pcap: Path, interface: str = "lo") -> Iterator[list[Wire]]:
    """Capture the server port's packets while the block runs; the parsed ``Wire`` is in the
    yielded list afterwards. Needs tcpdump and the right to capture (root or CAP_NET_RAW)."""
    # Headers only (-s 128): the timing needs no payload.
    command = ["tcpdump", "-i", interface, "-nn", "-s", "128", "-w", str(pcap)]
    dump = subprocess.Popen(
        [*command, "tcp", "port", str(server_port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert dump.stderr is not None
    # tcpdump says "listening on ..." once packets are being captured.
    ready = dump.stderr.readline()
    if "listening" not in ready:
        dump.kill()
        raise RuntimeError(f"tcpdump did not start: {ready.strip()}")
    result: list[Wire] = []
    try:
        yield result
    finally:
        time.sleep(0.2)  # the last responses' packets
        dump.send_signal(signal.SIGINT)  # tcpdump writes what it buffered, then exits
        dump.wait(timeout=30)
    text = subprocess.run(
        ["tcpdump", "-r", str(pcap), "-tt", "-nn"], capture_output=True, text=True, check=True
    ).stdout
    result.append(parse(iter(text.splitlines()), server_port))
