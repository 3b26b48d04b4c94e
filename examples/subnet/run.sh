#!/usr/bin/env bash
# Runs the example subnet twice: bittensor 10.5's axon/dendrite, then the same files moved
# to Lightning. Uses target/btvenv (made by lightning-py/scripts/test_bittensor.sh: bittensor
# 10.5.0 plus the in-place lightning_quic) and throwaway wallets in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PY:-$(cd ../.. && pwd)/target/btvenv/bin/python}"
WALLETS="$(mktemp -d)"
trap 'rm -rf "$WALLETS"' EXIT
for flavour in bittensor lightning; do
  echo "== $flavour"
  (cd "$flavour" && "$PY" miner.py --wallet-path "$WALLETS" --port 18091 --seconds 30 > "$WALLETS/miner-$flavour.log" 2>&1) &
  miner=$!
  for _ in $(seq 100); do grep -q serving "$WALLETS/miner-$flavour.log" 2>/dev/null && break; sleep 0.2; done
  (cd "$flavour" && "$PY" validator.py --wallet-path "$WALLETS" --port 18091) | grep -E "^(step|status)"
  kill "$miner" 2>/dev/null || true
  wait "$miner" 2>/dev/null || true
done
