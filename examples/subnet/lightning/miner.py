"""A miner moved to Lightning's Axon (QUIC): answers Dummy with twice its input.

    python miner.py --wallet-path /tmp/wallets --port 8091 [--seconds 30]
"""

import argparse
import time
from typing import Tuple

import bittensor as bt
from lightning_quic.synapse import Axon

from protocol import Dummy

VALIDATOR = "validator"


def forward(synapse: Dummy) -> Dummy:
    """The miner's work."""
    synapse.dummy_output = synapse.dummy_input * 2
    return synapse


def blacklist(synapse: Dummy) -> Tuple[bool, str]:
    """Only the local validator's hotkey may call."""
    allowed = bt.Wallet(name=VALIDATOR, path=ARGS.wallet_path).hotkey.ss58_address
    if synapse.dendrite.hotkey != allowed:
        return True, "unknown hotkey"
    return False, "allowed"


def priority(synapse: Dummy) -> float:
    """Every caller alike (a real subnet ranks by stake)."""
    return 1.0


def main() -> None:
    wallet = bt.Wallet(name="miner", path=ARGS.wallet_path)
    wallet.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False)
    axon = Axon(wallet=wallet, ip="127.0.0.1", port=ARGS.port, external_ip="127.0.0.1")
    axon.attach(forward_fn=forward, blacklist_fn=blacklist, priority_fn=priority)
    axon.start()
    print(f"miner {wallet.hotkey.ss58_address} serving on port {ARGS.port}", flush=True)
    try:
        time.sleep(ARGS.seconds)
    except KeyboardInterrupt:
        pass
    axon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--wallet-path", default="/tmp/subnet-wallets")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--seconds", type=float, default=3600)
    ARGS = parser.parse_args()
    main()
