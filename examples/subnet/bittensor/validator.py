"""A validator written against bittensor 10.5's Dendrite: queries the local miner.

    python validator.py --wallet-path /tmp/wallets --port 8091 [--rounds 3]
"""

import argparse
import asyncio

import bittensor as bt

from protocol import Dummy


async def main() -> None:
    wallet = bt.Wallet(name="validator", path=ARGS.wallet_path)
    wallet.create_if_non_existent(coldkey_use_password=False, hotkey_use_password=False)
    miner = bt.Wallet(name="miner", path=ARGS.wallet_path)
    axon = bt.AxonInfo(
        version=1, ip="127.0.0.1", port=ARGS.port, ip_type=4,
        hotkey=miner.hotkey.ss58_address, coldkey=miner.coldkeypub.ss58_address,
    )
    dendrite = bt.Dendrite(wallet=wallet)
    for step in range(ARGS.rounds):
        responses = await dendrite([axon, axon], Dummy(dummy_input=step), timeout=12)
        print(f"step {step}: {responses}", flush=True)
        assert responses == [2 * step, 2 * step], responses
    full = await dendrite(axon, Dummy(dummy_input=5), deserialize=False)
    print(f"status {full.dendrite.status_code} {full.dendrite.status_message}", flush=True)
    await dendrite.aclose_session()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--wallet-path", default="/tmp/subnet-wallets")
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--rounds", type=int, default=3)
    ARGS = parser.parse_args()
    # No network here: bittensor's Dendrite asks a web service for the public IP.
    bt.utils.networking.get_external_ip = lambda: "127.0.0.1"
    asyncio.run(main())
