"""The load benchmark's wire timing (benchmarks/wire.py): pairing tcpdump's packets into
requests and matching them to the client's own records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from wire import parse

SERVER = 8000
# Two keep-alive connections (ports 40001, 40002); tcpdump -tt -nn lines, trimmed.
DUMP = """\
100.000000 IP 127.0.0.1.40001 > 127.0.0.1.8000: Flags [P.], seq 1:200, ack 1, length 199
100.000100 IP 127.0.0.1.8000 > 127.0.0.1.40001: Flags [.], ack 200, length 0
100.001000 IP 127.0.0.1.40002 > 127.0.0.1.8000: Flags [P.], seq 1:100, ack 1, length 99
100.001500 IP 127.0.0.1.40002 > 127.0.0.1.8000: Flags [P.], seq 100:150, ack 1, length 50
100.004000 IP 127.0.0.1.8000 > 127.0.0.1.40001: Flags [P.], seq 1:150, ack 200, length 149
100.004100 IP 127.0.0.1.8000 > 127.0.0.1.40001: Flags [P.], seq 150:900, ack 200, length 750
100.011000 IP 127.0.0.1.8000 > 127.0.0.1.40002: Flags [P.], seq 1:150, ack 150, length 149
101.000000 IP 127.0.0.1.40001 > 127.0.0.1.8000: Flags [P.], seq 200:400, ack 900, length 200
101.002000 IP 127.0.0.1.8000 > 127.0.0.1.40001: Flags [P.], seq 900:1000, ack 400, length 100
102.000000 IP 127.0.0.1.40002 > 127.0.0.1.8000: Flags [P.], seq 150:300, ack 150, length 150
"""


def test_requests_pair_with_the_first_response_packet() -> None:
    wire = parse(iter(DUMP.splitlines()), SERVER)
    # A bare ACK is not a response; a response's second packet is not a new one.
    assert wire.requests[40001] == [
        (100.0, pytest.approx(0.004)),
        (101.0, pytest.approx(0.002)),
    ]
    # A request split over two packets is timed from its first; the last one has no answer.
    assert wire.requests[40002] == [(100.001, pytest.approx(0.010))]


def test_a_client_record_finds_its_request_on_its_port() -> None:
    wire = parse(iter(DUMP.splitlines()), SERVER)
    # The client reads its clock just before the packet leaves, or a little after.
    assert wire.latency(100.9999, 40001) == pytest.approx(0.002)
    assert wire.latency(100.0002, 40001) == pytest.approx(0.004)
    assert wire.latency(100.0009, 40002) == pytest.approx(0.010)
    assert wire.latency(101.5, 40002) is None  # unanswered
    assert wire.latency(100.0, 40003) is None  # another connection
