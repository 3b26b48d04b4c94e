"""The pure helpers of lightning-py/scripts/compare.py (the comparison itself runs outside CI)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import socket
import xml.etree.ElementTree as ET

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "scripts", "compare.py")
_spec = importlib.util.spec_from_file_location("compare", _PATH)
assert _spec is not None and _spec.loader is not None
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def test_percentile_is_nearest_rank_at_round_p_n_minus_1() -> None:
    samples = [float(i) for i in range(1, 101)]  # 1..100
    assert compare.percentile(samples, 50) == 51.0  # index round(0.5 * 99) = 50 (banker's: 50)
    assert compare.percentile(samples, 99) == 99.0  # index round(98.01) = 98
    assert compare.percentile(list(reversed(samples)), 0) == 1.0
    assert compare.percentile([3.0], 95) == 3.0
    assert math.isnan(compare.percentile([], 50))


def test_spread_and_formatting() -> None:
    s = compare.spread([3.0, 1.0, 2.0, float("nan")])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert compare.with_spread(s, compare.fmt_rate) == "2.0 (1.0–3.0)"
    assert compare.with_spread(compare.spread([5.0]), compare.fmt_rate) == "5.0"
    assert compare.with_spread(compare.spread([]), compare.fmt_rate) == "-"
    assert compare.fmt_ms(0.25) == "250 µs"
    assert compare.fmt_ms(12.34) == "12.3 ms"
    assert compare.fmt_rate(123456) == "123.5k"
    assert [compare.size_label(n) for n in compare.SIZES] == ["256 B", "1 KB", "10 KB", "100 KB", "1 MB"]


def test_rounds_rotate_the_order() -> None:
    assert compare.rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert compare.rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert compare.rotated([], 3) == []


def test_per_request_bytes_and_plan() -> None:
    got = compare._per_request((100, 200, 1, 2), (300, 600, 5, 6), 4)
    assert got == {"up": 50.0, "down": 100.0, "total": 150.0, "packets": 2.0}
    plan = dict(compare.bytes_plan(compare.SIZES, quick=False))
    assert plan[1024] > plan[102400] > plan[1048576] >= 5


def test_svg_chart_is_well_formed_xml() -> None:
    svg = compare.svg_line_chart(
        "t <x>", "req/s", ["256 B", "1 KB"], {"a": [10.0, 2000.0], "b": [float("nan"), 5.0]},
        {"a": "#f00"}, {"a": "A & co"},
    )
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 1


def test_udp_relay_counts_both_directions() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, t: asyncio.BaseTransport) -> None:
                self.t = t

            def datagram_received(self, data: bytes, addr: tuple) -> None:
                self.t.sendto(data * 2, addr)  # type: ignore[attr-defined]

        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        counter = compare.Counter()
        port, close = await compare.start_relay("udp", server.get_extra_info("sockname")[1], counter)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect(("127.0.0.1", port))
        for _ in range(3):
            await loop.sock_sendall(s, b"abcd")
            assert await asyncio.wait_for(loop.sock_recv(s, 100), 5) == b"abcdabcd"
        assert counter.snapshot() == (12, 24, 3, 3)
        s.close()
        close()
        server.close()

    asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
