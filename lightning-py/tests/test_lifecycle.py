"""Process-level traps, each in a subprocess: Ctrl-C, interpreter exit, fork."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).parent

PRELUDE = textwrap.dedent(
    """
    import os, sys, threading, time
    sys.path.insert(0, %r)
    from conftest import MINER_HOTKEY, MINER_SEED, VALIDATOR_HOTKEY, VALIDATOR_SEED, make_server
    from lightning_quic import Lightning, hotkey_from_seed

    def client(seed=VALIDATOR_SEED):
        c = Lightning(hotkey_from_seed(seed))
        c.set_validator_keypair(seed)
        c.initialize_connections([])
        return c

    def axon(server):
        return {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": server.port}

    def echo_server():
        server = make_server()
        server.register_synapse_handler("echo", lambda d: d)
        server.start()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def in_fork_child(child):
        # Runs child() in a fork child that exits with its return value (99 if it raised),
        # and prints "child <exit code>".
        pid = os.fork()
        if pid == 0:
            try:
                code = child()
            except BaseException:
                code = 99
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("child", os.waitstatus_to_exitcode(status), flush=True)
    """
    % str(HERE)
)


def spawn(body: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == expected, f"got {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"


def finish(proc: subprocess.Popen, timeout: float = 15) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the subprocess hung; stdout={out!r} stderr={err!r}")
    return proc.returncode, out, err


def test_ctrl_c_interrupts_serve_forever() -> None:
    proc = spawn(
        """
        server = make_server()
        server.register_synapse_handler("echo", lambda d: d)
        server.start()
        try:
            print("ready", flush=True)  # inside the try: the signal may come at once
            server.serve_forever()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        server.stop()
        """
    )
    wait_for_line(proc, "ready")
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.strip() == "interrupted"


def test_ctrl_c_interrupts_a_blocking_query() -> None:
    proc = spawn(
        """
        release = threading.Event()

        def slow(d):
            # Printed by the handler: the main thread is blocked in query_axon by now.
            print("ready", flush=True)
            release.wait(30)
            return {}

        server = make_server()
        server.register_synapse_handler("slow", slow)
        server.start()
        c = client()
        try:
            c.query_axon(axon(server), {"synapse_type": "slow", "data": {}})
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        release.set()
        server.stop()
        """
    )
    wait_for_line(proc, "ready")
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.strip() == "interrupted"


def test_custom_sigterm_handler_runs_during_serve_forever() -> None:
    proc = spawn(
        """
        import signal

        class Term(Exception):
            pass

        def on_term(*args):
            raise Term()

        server = make_server()
        server.start()
        signal.signal(signal.SIGTERM, on_term)
        try:
            print("ready", flush=True)
            server.serve_forever()
        except Term:
            print("stopped", flush=True)
        server.stop()
        """
    )
    wait_for_line(proc, "ready")
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.strip() == "stopped"


def test_exit_with_server_in_non_daemon_thread() -> None:
    proc = spawn(
        """
        server = make_server()
        server.register_synapse_handler("echo", lambda d: d)
        server.start()
        threading.Thread(target=server.serve_forever).start()  # not a daemon
        c = client()
        assert c.query_axon(axon(server), {"synapse_type": "echo", "data": {"a": 1}})["success"]
        print("done", flush=True)
        """
    )
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.strip() == "done"


def test_exit_while_a_handler_is_running() -> None:
    proc = spawn(
        """
        started = threading.Event()
        def slow(d):
            started.set()
            time.sleep(60)
            return {}
        server = make_server()
        server.register_synapse_handler("slow", slow)
        server.start()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        c = client()
        q = threading.Thread(
            target=lambda: c.query_axon(axon(server), {"synapse_type": "slow", "data": {}}),
            daemon=True,
        )
        q.start()
        assert started.wait(10)
        print("exiting", flush=True)
        """
    )
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.strip() == "exiting"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_clear_error_and_fresh_objects_work() -> None:
    proc = spawn(
        """
        server = echo_server()
        c = client()
        ax = axon(server)
        assert c.query_axon(ax, {"synapse_type": "echo", "data": {}})["success"]

        def child():
            try:
                c.query_axon(ax, {"synapse_type": "echo", "data": {}})
                return 10
            except RuntimeError as e:
                if "after fork" not in str(e):
                    return 11
            try:
                server.get_connection_stats()
                return 12
            except RuntimeError:
                pass
            # New objects in the child work (a fresh runtime), against the parent's server.
            # Under another validator key: the miner keeps one connection per hotkey, so
            # the parent's own key would replace the parent's connection, and the parent's
            # next query could fail with "replaced" (seen once in CI).
            fresh = client(bytes([3] * 32))
            r = fresh.query_axon(ax, {"synapse_type": "echo", "data": {"child": 1}})
            return 0 if r["data"] == {"child": 1} else 13

        in_fork_child(child)
        # The parent's objects are unaffected.
        assert c.query_axon(ax, {"synapse_type": "echo", "data": {}})["success"]
        server.stop()
        """
    )
    code, out, err = finish(proc, timeout=30)
    assert code == 0, err
    assert out.strip() == "child 0", err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_child_gets_clear_error_from_asyncio_queries() -> None:
    # The asyncio query path tells a fork child by the count Python's after-fork hook
    # keeps, not by a getpid() per query: this fails (the child would wait on the parent's
    # endpoint task, which it does not have) if that hook is not registered.
    proc = spawn(
        """
        import asyncio
        from lightning_quic import AsyncLightning

        server = echo_server()
        c = AsyncLightning(VALIDATOR_HOTKEY)
        c.set_validator_keypair(VALIDATOR_SEED)
        ax = axon(server)

        async def query():
            return await c.query_axon(ax, {"synapse_type": "echo", "data": {"n": 1}})

        async def connect_and_query():
            await c.initialize_connections([ax])
            return await query()

        assert asyncio.run(connect_and_query())["data"] == {"n": 1}

        def child():
            try:
                asyncio.run(asyncio.wait_for(query(), 5))
                return 10
            except RuntimeError as e:
                return 0 if "after fork" in str(e) else 11

        in_fork_child(child)
        # The parent's client is unaffected.
        assert asyncio.run(query())["data"] == {"n": 1}
        server.stop()
        """
    )
    code, out, err = finish(proc, timeout=30)
    assert code == 0, err
    assert out.strip() == "child 0", err


def test_exit_with_a_running_async_server() -> None:
    proc = spawn(
        """
        import asyncio
        from lightning_quic import AsyncLightningServer

        async def main():
            server = AsyncLightningServer(MINER_HOTKEY, host="127.0.0.1", port=0)
            server.set_miner_keypair(MINER_SEED)

            async def echo(data):
                return data

            server.register_synapse_handler("echo", echo)
            await server.start()
            # A thread keeps serving the sync way; the loop ends without stopping anything.
            threading.Thread(target=lambda: LightningServer.serve_forever(server)).start()
            # (A sync query here would block the loop its coroutine handler needs.)
            c = AsyncLightning(VALIDATOR_HOTKEY)
            c.set_validator_keypair(VALIDATOR_SEED)
            await c.initialize_connections([])
            r = await c.query_axon(axon(server), {"synapse_type": "echo", "data": {"a": 1}})
            print("ok" if r["data"] == {"a": 1} else r, flush=True)

        from lightning_quic import AsyncLightning, LightningServer
        asyncio.run(main())
        """
    )
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.strip() == "ok"
    assert "never awaited" not in err


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
def test_import_and_construction_start_no_threads() -> None:
    # A thread started at import would make every later fork() unsafe (and warn on 3.12+).
    proc = spawn(
        """
        from lightning_quic import LightningServer
        before = len(os.listdir("/proc/self/task"))
        Lightning(VALIDATOR_HOTKEY)
        LightningServer(MINER_HOTKEY)
        print(before, len(os.listdir("/proc/self/task")), flush=True)
        """
    )
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.split() == ["1", "1"]


def test_ctrl_c_interrupts_initialize_connections() -> None:
    proc = spawn(
        """
        import socket
        # A UDP port nobody answers on: the connect would wait for its 60 s timeout.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        silent = {"hotkey": MINER_HOTKEY, "ip": "127.0.0.1", "port": s.getsockname()[1]}
        c = Lightning(VALIDATOR_HOTKEY, connect_timeout_secs=60)
        c.set_validator_keypair(VALIDATOR_SEED)
        try:
            print("ready", flush=True)
            c.initialize_connections([silent])
            print("returned", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        """
    )
    wait_for_line(proc, "ready")
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc, timeout=30)
    assert code == 0, err
    assert out.strip() == "interrupted"


def test_dropping_a_server_while_its_handler_runs() -> None:
    proc = spawn(
        """
        import gc
        started = threading.Event()
        release = threading.Event()
        def busy(d):
            started.set()
            while not release.is_set():  # pure Python: this thread keeps asking for the GIL
                pass
            return {}
        server = make_server()
        server.register_synapse_handler("busy", busy)
        server.start()  # serving; no serve_forever thread keeps a reference to it
        c = client()
        ax = axon(server)
        outcome = []
        def ask():
            try:
                outcome.append(c.query_axon(ax, {"synapse_type": "busy", "data": {}}, timeout_secs=10))
            except Exception as e:
                outcome.append(e)
        t = threading.Thread(target=ask, daemon=True)
        t.start()
        assert started.wait(10)
        # Collected with the GIL held while the handler thread wants it: the destructor
        # must not wait for that thread, the runtime, or the endpoint.
        del server
        gc.collect()
        release.set()
        t.join(15)
        print("done", len(outcome), flush=True)
        """
    )
    code, out, err = finish(proc, timeout=30)
    assert code == 0, err
    assert out.strip() == "done 1"


def test_exit_with_a_running_synapse_axon_and_a_forward_in_its_pool() -> None:
    pytest.importorskip("pydantic")
    proc = spawn(
        """
        import asyncio
        from lightning_quic.synapse import Axon, Dendrite, Synapse

        class Echo(Synapse):
            value: int = 0

        started = threading.Event()

        def forward(synapse: Echo) -> Echo:
            if synapse.value == 2:
                started.set()
                time.sleep(60)  # still running on a pool thread when the process exits
            return synapse

        axon = Axon(seed=MINER_SEED, host="127.0.0.1", port=0).attach(forward).start()

        async def main():
            d = Dendrite(seed=VALIDATOR_SEED)
            r = await d(axon, Echo(value=1), deserialize=False)
            print("ok" if r.is_success and r.value == 1 else r.dendrite, flush=True)
            asyncio.ensure_future(d(axon, Echo(value=2), timeout=60))
            while not started.is_set():
                await asyncio.sleep(0.01)

        asyncio.run(main())
        print("exiting", flush=True)
        """
    )
    code, out, err = finish(proc)
    assert code == 0, err
    assert out.split() == ["ok", "exiting"]
