"""Who a Dendrite or an Axon signs as: a bittensor wallet or a 32-byte sr25519 seed."""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

from .._native import hotkey_from_seed

__all__ = ["identity"]


def identity(wallet: Any, seed: Optional[bytes]) -> Tuple[str, Callable[[Any], None]]:
    """``(ss58 hotkey, install)`` where ``install(native)`` gives a native client or server
    its signer. A wallet is anything with ``hotkey.ss58_address`` and ``hotkey.sign``
    (bittensor's ``Wallet``); its hotkey signs each handshake."""
    if (wallet is None) == (seed is None):
        raise ValueError("give exactly one of wallet= or seed=")
    if seed is not None:
        seed = bytes(seed)
        hotkey = hotkey_from_seed(seed)

        def install_seed(native: Any) -> None:
            if hasattr(native, "set_validator_keypair"):
                native.set_validator_keypair(seed)
            else:
                native.set_miner_keypair(seed)

        return hotkey, install_seed
    keypair = getattr(wallet, "hotkey", None)
    hotkey = getattr(keypair, "ss58_address", None)
    if not isinstance(hotkey, str) or not callable(getattr(keypair, "sign", None)):
        raise TypeError("wallet must have hotkey.ss58_address and hotkey.sign (a bittensor Wallet)")

    files = (getattr(wallet, "name", None), getattr(wallet, "path", None), getattr(wallet, "hotkey_str", None))

    def sign(message: bytes) -> bytes:
        return bytes(keypair.sign(message))

    def install_wallet(native: Any) -> None:
        # bittensor's Wallet names its files: load the key in Rust (no GIL per handshake).
        # Anything else signs through Python, which only a client can do.
        if all(isinstance(f, str) for f in files):
            if hasattr(native, "set_wallet"):
                native.set_wallet(*files)
            else:
                native.set_miner_wallet(*files)
        elif hasattr(native, "set_python_signer"):
            native.set_python_signer(sign)
        else:
            raise TypeError("an Axon's wallet needs name, path and hotkey_str (or pass seed=)")

    return hotkey, install_wallet
