"""lightning_quic.synapse: bittensor-shaped Axon and Dendrite over real QUIC on loopback.

Every test runs a real Axon (UDP, TLS, sr25519 handshake) and a real Dendrite or raw
client; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import time
import uuid
from typing import Any, AsyncIterator, Iterator, List, Optional, Tuple

import pytest

pydantic = pytest.importorskip("pydantic")

from conftest import MINER_HOTKEY, MINER_SEED, VALIDATOR_HOTKEY, VALIDATOR_SEED  # noqa: E402
from lightning_quic import AsyncLightning, AsyncLightningServer, HandshakeError, hotkey_from_seed  # noqa: E402
from lightning_quic.synapse import (  # noqa: E402
    Axon,
    Dendrite,
    PriorityException,
    StreamingSynapse,
    Synapse,
)

pytestmark = pytest.mark.asyncio


class Dummy(Synapse):
    """The subnet template's synapse."""

    dummy_input: int
    dummy_output: Optional[int] = None

    def deserialize(self) -> Optional[int]:
        return self.dummy_output


class Who(Synapse):
    """Answers with the hotkey the miner saw."""

    seen: Optional[str] = None


class Sleepy(Synapse):
    """Sleeps ``seconds`` in the miner; ``rank`` is its priority; ``tag`` names it."""

    seconds: float = 0.0
    rank: float = 0.0
    tag: str = ""


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Rich(Synapse):
    """Values MessagePack holds natively and values it does not."""

    blob: bytes = b""
    when: Optional[dt.datetime] = None
    ident: Optional[uuid.UUID] = None
    color: Color = Color.RED
    nested: dict = {}
    out: Optional[bytes] = None


class Tokens(StreamingSynapse):
    """Streams ``n`` chunks."""

    n: int = 3


class Words(StreamingSynapse):
    """Streams ``n`` words from a sync generator."""

    n: int = 2


def make_axon(**kw: Any) -> Axon:
    return Axon(seed=MINER_SEED, host="127.0.0.1", port=0, **kw)


def make_dendrite(seed: bytes = VALIDATOR_SEED) -> Dendrite:
    return Dendrite(seed=seed)


async def test_forward_async_and_sync_functions() -> None:
    async def forward(synapse: Dummy) -> Dummy:
        synapse.dummy_output = synapse.dummy_input * 2
        return synapse

    def forward_who(synapse: Who) -> Who:  # a plain function: runs on the pool
        synapse.seen = synapse.dendrite.hotkey
        return synapse

    async with make_axon().attach(forward).attach(forward_who) as axon:
        async with make_dendrite() as d:
            assert await d(axon.info(), Dummy(dummy_input=21)) == 42
            original = Dummy(dummy_input=5)
            full = await d(axon, original, deserialize=False)
            assert full.dummy_output == 10 and original.dummy_output is None  # a copy
            assert full.is_success and full.dendrite.status_code == 200
            assert full.dendrite.status_message == "Success"
            assert full.axon.status_code == 200 and full.axon.hotkey == MINER_HOTKEY
            assert full.dendrite.process_time is not None and full.dendrite.process_time > 0
            who = await d(axon, Who(), deserialize=False)
            assert who.seen == VALIDATOR_HOTKEY


async def test_dendrite_hotkey_is_the_authenticated_one_not_a_claimed_one() -> None:
    async def forward(synapse: Who) -> Who:
        synapse.seen = synapse.dendrite.hotkey
        return synapse

    other_seed = bytes([7] * 32)
    async with make_axon().attach(forward) as axon:
        async with make_dendrite(other_seed) as d:
            assert (await d(axon, Who(), deserialize=False)).seen == hotkey_from_seed(other_seed)
        # A raw btlightning-style client claims another hotkey inside the data.
        raw = AsyncLightning(VALIDATOR_HOTKEY)
        raw.set_validator_keypair(VALIDATOR_SEED)
        await raw.initialize_connections([])
        claim = {"dendrite": {"hotkey": MINER_HOTKEY}, "seen": None}
        r = await raw.query_axon(axon.info(), {"synapse_type": "Who", "data": claim})
        await raw.close()
    assert r["success"] is True
    assert r["data"] == {"seen": VALIDATOR_HOTKEY}  # own fields only, the real caller


async def test_blacklist_refuses_with_its_reason() -> None:
    called = []

    async def forward(synapse: Dummy) -> Dummy:
        called.append(synapse.dummy_input)
        synapse.dummy_output = 1
        return synapse

    def blacklist(synapse: Dummy) -> Tuple[bool, str]:
        if synapse.dendrite.hotkey != VALIDATOR_HOTKEY:
            return True, "unknown hotkey"
        return False, "allowed"

    async with make_axon().attach(forward, blacklist_fn=blacklist) as axon:
        async with make_dendrite(bytes([9] * 32)) as stranger:
            r = await stranger(axon, Dummy(dummy_input=1), deserialize=False)
        async with make_dendrite() as friend:
            ok = await friend(axon, Dummy(dummy_input=2), deserialize=False)
    assert r.is_blacklist and r.dendrite.status_code == 403 and r.axon.status_code == 403
    assert r.dendrite.status_message == "Forbidden. Key is blacklisted: unknown hotkey."
    assert r.dummy_output is None
    assert ok.is_success and called == [2]


async def test_verify_may_refuse() -> None:
    async def verify(synapse: Dummy) -> None:
        if synapse.dummy_input < 0:
            raise ValueError("negative input")

    def forward(synapse: Dummy) -> Dummy:
        synapse.dummy_output = synapse.dummy_input
        return synapse

    async with make_axon().attach(forward, verify_fn=verify) as axon:
        async with make_dendrite() as d:
            bad = await d(axon, Dummy(dummy_input=-1), deserialize=False)
            good = await d(axon, Dummy(dummy_input=3), deserialize=False)
    assert bad.dendrite.status_code == 401
    assert bad.dendrite.status_message == "Not Verified with error: negative input"
    assert good.is_success and good.dummy_output == 3


async def test_priority_orders_waiting_requests() -> None:
    release = asyncio.Event()
    order: List[str] = []

    async def forward(synapse: Sleepy) -> Sleepy:
        order.append(synapse.tag)
        if synapse.tag == "blocker":
            await release.wait()
        return synapse

    def priority(synapse: Sleepy) -> float:
        return synapse.rank

    async with make_axon(max_workers=1).attach(forward, priority_fn=priority) as axon:
        async with make_dendrite() as d:
            blocker = asyncio.ensure_future(d(axon, Sleepy(tag="blocker"), deserialize=False))
            while order != ["blocker"]:
                await asyncio.sleep(0.01)
            # Sent at once: they reach the miner in any order, so the ranks differ.
            ranks = {"low": 1.0, "top": 9.0, "mid": 5.0, "high": 7.0, "lower": 3.0}
            waiting = [
                asyncio.ensure_future(d(axon, Sleepy(tag=t, rank=r), deserialize=False))
                for t, r in ranks.items()
            ]
            deadline = time.monotonic() + 5
            while axon._gate.waiting < len(ranks):  # all queued behind the blocker
                assert time.monotonic() < deadline, "requests did not queue"
                await asyncio.sleep(0.01)
            release.set()
            results = await asyncio.gather(blocker, *waiting)
    assert all(r.is_success for r in results)
    assert order == ["blocker", "top", "high", "mid", "lower", "low"]  # highest first


async def test_timeout_gives_408_and_the_miner_task_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def forward(synapse: Sleepy) -> Sleepy:
        try:
            await asyncio.sleep(synapse.seconds)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return synapse

    async with make_axon().attach(forward) as axon:
        async with make_dendrite() as d:
            started = time.monotonic()
            r = await d(axon, Sleepy(seconds=5.0), timeout=0.3, deserialize=False)
            elapsed = time.monotonic() - started
            assert r.is_timeout and r.dendrite.status_code == 408
            assert r.dendrite.status_message == "Request timeout after 0.3 seconds"
            assert r.timeout == 0.3
            assert elapsed < 3.0
            await asyncio.wait_for(cancelled.wait(), 3.0)


async def test_miner_exceptions_map_to_status_codes_without_leaking() -> None:
    def forward(synapse: Dummy) -> Dummy:
        if synapse.dummy_input == 1:
            raise RuntimeError("secret detail /home/miner/key")
        if synapse.dummy_input == 2:
            raise PriorityException("busy, come back later")
        return None  # type: ignore[return-value]  # mutated in place is fine

    async with make_axon().attach(forward) as axon:
        async with make_dendrite() as d:
            crash = await d(axon, Dummy(dummy_input=1), deserialize=False)
            busy = await d(axon, Dummy(dummy_input=2), deserialize=False)
            none = await d(axon, Dummy(dummy_input=3), deserialize=False)
    assert crash.dendrite.status_code == 500
    assert crash.dendrite.status_message.startswith("Internal Server Error #")
    assert "secret" not in crash.dendrite.status_message
    assert busy.dendrite.status_code == 503 and busy.dendrite.status_message == "busy, come back later"
    assert none.is_success


async def test_parse_errors_and_unknown_synapses() -> None:
    async def forward(synapse: Dummy) -> Dummy:
        return synapse

    async with make_axon().attach(forward) as axon:
        raw = AsyncLightning(VALIDATOR_HOTKEY)
        raw.set_validator_keypair(VALIDATOR_SEED)
        await raw.initialize_connections([])
        bad = await raw.query_axon(axon.info(), {"synapse_type": "Dummy", "data": {"dummy_input": "x"}})
        await raw.close()
        async with make_dendrite() as d:
            unknown = await d(axon, Who(), deserialize=False)
    assert bad["success"] is False and bad["data"] == {}
    assert bad["error"].startswith("400 Invalid synapse data: dummy_input:")
    assert unknown.dendrite.status_code == 404


async def test_streaming_async_and_sync_generators() -> None:
    async def forward(synapse: Tokens) -> AsyncIterator[bytes]:
        for i in range(synapse.n):
            yield f"tok{i} ".encode()
            await asyncio.sleep(0)

    def forward_words(synapse: Words) -> Iterator[str]:
        for i in range(synapse.n):
            yield f"w{i}"

    def blacklist(synapse: Words) -> Tuple[bool, str]:
        return synapse.n > 100, "too many"

    async with make_axon().attach(forward).attach(forward_words, blacklist_fn=blacklist) as axon:
        async with make_dendrite() as d:
            got = [x async for x in d.call_stream(axon, Tokens(n=4), deserialize=False)]
            words = [x async for x in d.call_stream(axon, Words(n=3), deserialize=False)]
            refused = [x async for x in d.call_stream(axon, Words(n=1000), deserialize=False)]
    assert got[:-1] == [b"tok0 ", b"tok1 ", b"tok2 ", b"tok3 "]
    assert got[-1].is_success
    assert words[:-1] == [b"w0", b"w1", b"w2"] and words[-1].is_success
    assert len(refused) == 1 and refused[0].dendrite.status_code == 403
    assert refused[0].dendrite.status_message == "Forbidden. Key is blacklisted: too many."


async def test_streaming_failure_midway_and_timeout() -> None:
    async def forward(synapse: Tokens) -> AsyncIterator[bytes]:
        yield b"first"
        if synapse.n == 0:
            await asyncio.sleep(10)
        raise ValueError("secret")

    async with make_axon().attach(forward) as axon:
        async with make_dendrite() as d:
            failed = [x async for x in d.call_stream(axon, Tokens(n=1), deserialize=False)]
            slow = [x async for x in d.call_stream(axon, Tokens(n=0), timeout=0.5, deserialize=False)]
    assert failed[0] == b"first" and failed[-1].dendrite.status_code == 500
    assert "secret" not in failed[-1].dendrite.status_message
    assert slow[0] == b"first" and slow[-1].is_timeout


async def test_dendrite_calls_many_axons_at_once() -> None:
    axons = []
    for i in range(6):
        seed = bytes([30 + i] * 32)

        def make_forward(i: int):
            async def forward(synapse: Dummy) -> Dummy:
                await asyncio.sleep(0.2)
                synapse.dummy_output = synapse.dummy_input * 100 + i
                return synapse

            return forward

        ax = Axon(seed=seed, host="127.0.0.1", port=0).attach(make_forward(i))
        await ax.astart()
        axons.append(ax)
    dead = axons[3].info()
    await axons[3].astop()
    try:
        async with make_dendrite() as d:
            started = time.monotonic()
            out = await d([a.info() if a is not axons[3] else dead for a in axons], Dummy(dummy_input=7), timeout=1.0)
            elapsed = time.monotonic() - started
            full = await d([axons[0], axons[1]], Dummy(dummy_input=1), deserialize=False)
    finally:
        for ax in axons:
            await ax.astop()
    assert out[:3] == [700, 701, 702] and out[4:] == [704, 705]
    assert out[3] is None  # the stopped miner: deserialize() of a failed call
    # Concurrent: one after another would take at least 1.0 s (the dead one) + 5 x 0.2 s.
    assert elapsed < 1.9
    assert [s.dummy_output for s in full] == [100, 101]


async def test_dead_miner_status() -> None:
    async def forward(synapse: Dummy) -> Dummy:
        return synapse

    axon = make_axon().attach(forward)
    await axon.astart()
    info = axon.info()
    await axon.astop()
    async with make_dendrite() as d:
        r = await d(info, Dummy(dummy_input=1), timeout=1.0, deserialize=False)
    assert r.dendrite.status_code in (408, 503)
    assert r.is_failure


async def test_wire_mapping_for_plain_clients() -> None:
    async def forward(synapse: Rich) -> Rich:
        assert isinstance(synapse.when, dt.datetime) and isinstance(synapse.ident, uuid.UUID)
        assert synapse.color is Color.BLUE
        synapse.out = synapse.blob[::-1]
        return synapse

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    ident = uuid.UUID(int=42)
    async with make_axon().attach(forward) as axon:
        async with make_dendrite() as d:
            r = await d(
                axon,
                Rich(blob=b"\x00\x01\xff", when=when, ident=ident, color=Color.BLUE, nested={"k": [1, 2]}),
                deserialize=False,
            )
        raw = AsyncLightning(VALIDATOR_HOTKEY)
        raw.set_validator_keypair(VALIDATOR_SEED)
        await raw.initialize_connections([])
        plain = await raw.query_axon(
            axon.info(),
            {"synapse_type": "Rich", "data": {"blob": b"ab", "when": "2026-01-02T03:04:05Z", "ident": str(ident), "color": "blue"}},
        )
        await raw.close()
    assert r.is_success and r.out == b"\xff\x01\x00" and r.when == when and r.ident == ident
    assert plain["success"] is True
    data = plain["data"]
    assert set(data) == {"blob", "when", "ident", "color", "nested", "out"}  # own fields only
    assert data["out"] == b"ba" and isinstance(data["out"], bytes)  # binary, not base64
    assert data["when"] == "2026-01-02T03:04:05Z" and data["ident"] == str(ident)
    assert data["color"] == "blue"


async def test_dendrite_calls_a_plain_lightning_server() -> None:
    def handler(data: dict) -> dict:
        if data["dummy_input"] < 0:
            raise ValueError("nope")
        return {"dummy_output": data["dummy_input"] + 1}

    server = AsyncLightningServer(MINER_HOTKEY, host="127.0.0.1", port=0)
    server.set_miner_keypair(MINER_SEED)
    server.register_synapse_handler("Dummy", handler)
    await server.start()
    try:
        target = {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": server.port}
        async with make_dendrite() as d:
            ok = await d(target, Dummy(dummy_input=1))
            bad = await d(target, Dummy(dummy_input=-1), deserialize=False)
    finally:
        await server.stop()
    assert ok == 2
    assert bad.dendrite.status_code == 500 and bad.dendrite.status_message == "request processing failed"


class Metagraph:
    """Shaped like bittensor's metagraph: parallel lists by uid."""

    def __init__(self) -> None:
        self.hotkeys: List[str] = []
        self.validator_permit: List[bool] = []
        self.S: List[float] = []
        self.axons: List[Any] = []

    def add(self, hotkey: str, permit: bool, stake: float, axon: Any = None) -> int:
        self.hotkeys.append(hotkey)
        self.validator_permit.append(permit)
        self.S.append(stake)
        self.axons.append(axon)
        return len(self.hotkeys) - 1


async def test_metagraph_admission_at_the_handshake() -> None:
    called = []

    async def forward(synapse: Dummy) -> Dummy:
        called.append(synapse.dendrite.hotkey)
        synapse.dummy_output = 1
        return synapse

    mg = Metagraph()
    uid = mg.add(VALIDATOR_HOTKEY, permit=False, stake=5000.0)
    rich = bytes([11] * 32)
    mg.add(hotkey_from_seed(rich), permit=True, stake=10.0)  # permit, too little stake
    axon = make_axon(metagraph=mg, min_stake=1000.0, metagraph_refresh_secs=1).attach(forward)
    await axon.astart()
    try:
        raw = AsyncLightning(VALIDATOR_HOTKEY)
        raw.set_validator_keypair(VALIDATOR_SEED)
        await raw.initialize_connections([])
        with pytest.raises(HandshakeError):
            await raw.query_axon(axon.info(), {"synapse_type": "Dummy", "data": {"dummy_input": 1}})
        await raw.close()
        async with make_dendrite(rich) as d:
            low = await d(axon, Dummy(dummy_input=1), deserialize=False)
        assert low.dendrite.status_code == 503 and called == []

        mg.validator_permit[uid] = True  # the application's metagraph sync grants it
        deadline = time.monotonic() + 10
        while True:
            async with make_dendrite() as d:
                r = await d(axon, Dummy(dummy_input=1), timeout=2, deserialize=False)
            if r.is_success or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert r.is_success, r.dendrite.status_message
        assert called == [VALIDATOR_HOTKEY]
    finally:
        await axon.astop()


async def test_sync_start_and_stop_on_a_thread_of_its_own() -> None:
    def forward(synapse: Dummy) -> Dummy:
        synapse.dummy_output = -synapse.dummy_input
        return synapse

    axon = make_axon().attach(forward).start()
    try:
        async with make_dendrite() as d:
            assert await d(axon, Dummy(dummy_input=4)) == -4
    finally:
        axon.stop()
    assert not axon.started


async def test_attach_needs_an_annotated_synapse() -> None:
    def untyped(synapse):  # type: ignore[no-untyped-def]
        return synapse

    with pytest.raises(TypeError, match="annotated with a Synapse subclass"):
        make_axon().attach(untyped)
    with pytest.raises(ValueError, match="exactly one"):
        Axon(host="127.0.0.1", port=0)


async def test_ipv6_axon_and_ipv4_axon_from_one_dendrite() -> None:
    async def forward(synapse: Dummy) -> Dummy:
        synapse.dummy_output = synapse.dummy_input + 1
        return synapse

    v6 = Axon(seed=MINER_SEED, host="::1", port=0).attach(forward)
    try:
        await v6.astart()
    except ValueError as e:  # no IPv6 on this host
        pytest.skip(f"no IPv6 loopback: {e}")
    try:
        async with make_axon().attach(forward) as v4:
            async with make_dendrite() as d:
                out = await d([v6.info(), v4.info()], Dummy(dummy_input=1), timeout=5)
    finally:
        await v6.astop()
    assert v6.info().ip == "::1"
    assert out == [2, 2]


async def test_dendrite_syncs_its_miner_pool_with_a_metagraph() -> None:
    async def forward(synapse: Dummy) -> Dummy:
        return synapse

    async with make_axon().attach(forward) as axon:
        mg = Metagraph()
        mg.add(MINER_HOTKEY, permit=False, stake=0.0, axon=axon.info())
        not_serving = {"hotkey": hotkey_from_seed(bytes([12] * 32)), "ip": "0.0.0.0", "port": 0}
        mg.add(not_serving["hotkey"], permit=False, stake=0.0, axon=_Info(**not_serving))
        async with make_dendrite() as d:
            assert await d.sync_metagraph(mg) == [MINER_HOTKEY]
            stats = d.client.get_connection_stats()
        port = axon.port
    assert stats["active_miners"] == "1"
    assert stats[f"connection_127.0.0.1:{port}"] == "active"


class _Info:
    """bittensor's AxonInfo shape (attributes)."""

    def __init__(self, hotkey: str, ip: str, port: int) -> None:
        self.hotkey, self.ip, self.port = hotkey, ip, port


async def test_axon_starts_again_after_stop() -> None:
    def forward(synapse: Dummy) -> Dummy:
        synapse.dummy_output = 1
        return synapse

    axon = make_axon().attach(forward)
    for _ in range(2):
        await axon.astart()
        async with make_dendrite() as d:
            assert await d(axon, Dummy(dummy_input=0)) == 1
        await axon.astop()


async def test_core_import_does_not_need_pydantic() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['pydantic'] = None; sys.modules['pydantic_core'] = None\n"
        "import lightning_quic\n"
        "assert lightning_quic.Lightning and lightning_quic.LightningServer\n"
        "try:\n"
        "    import lightning_quic.synapse\n"
        "except ImportError:\n"
        "    print('synapse needs pydantic')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "synapse needs pydantic"


def _sync_query(axon_info: Any) -> Any:
    d = make_dendrite()
    return d.query([axon_info, axon_info], Dummy(dummy_input=3))


async def test_dendrite_query_without_an_event_loop() -> None:
    def forward(synapse: Dummy) -> Dummy:
        synapse.dummy_output = synapse.dummy_input * 3
        return synapse

    async with make_axon().attach(forward) as axon:
        # From a thread with no loop, as a synchronous validator calls it.
        assert await asyncio.to_thread(_sync_query, axon.info()) == [9, 9]
        with pytest.raises(RuntimeError, match="running event loop"):
            make_dendrite().query(axon.info(), Dummy(dummy_input=1))


async def test_plain_lightning_server_admits_from_a_metagraph(serve: Any) -> None:
    from lightning_quic import Lightning

    mg = Metagraph()
    uid = mg.add(VALIDATOR_HOTKEY, permit=True, stake=0.5)  # a permit, too little stake
    served = serve(
        lambda s: (
            s.register_synapse_handler("echo", lambda data: data),
            s.admit_from_metagraph(mg, min_stake=1.0),
        ),
        require_validator_permit=True,
        validator_permit_refresh_secs=1,
    )

    def ask() -> Any:
        c = Lightning(wallet_hotkey=VALIDATOR_HOTKEY)
        c.set_validator_keypair(VALIDATOR_SEED)
        c.initialize_connections([])
        try:
            return c.query_axon(served.axon, {"synapse_type": "echo", "data": {"a": 1}}, timeout_secs=3)
        finally:
            c.close()

    with pytest.raises(HandshakeError):
        await asyncio.to_thread(ask)
    mg.S[uid] = 2.0  # the application's metagraph sync gives it stake
    deadline = time.monotonic() + 10
    while True:
        try:
            answer = await asyncio.to_thread(ask)
            break
        except HandshakeError:
            assert time.monotonic() < deadline, "not admitted after the refresh"
            await asyncio.sleep(0.3)
    assert answer["success"] and answer["data"] == {"a": 1}


async def test_plain_forward_runs_on_threads_or_on_the_loop() -> None:
    import threading

    threads: List[str] = []

    def forward(synapse: Dummy) -> Dummy:
        threads.append(threading.current_thread().name)
        return synapse

    for in_threads in (True, False):
        async with make_axon(forward_in_threads=in_threads).attach(forward) as axon:
            async with make_dendrite() as d:
                assert (await d(axon, Dummy(dummy_input=1), deserialize=False)).is_success
    loop_thread = threading.current_thread().name
    assert threads[0].startswith("axon-forward") and threads[1] == loop_thread
