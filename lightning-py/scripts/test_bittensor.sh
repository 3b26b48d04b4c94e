#!/usr/bin/env bash
# Runs the synapse tests with bittensor 10.5.0 installed (its own venv, target/btvenv), so
# test_synapse_bittensor.py checks our Axon/Dendrite with bittensor's own bt.Synapse
# subclasses. bittensor is not a dependency of lightning-quic, hence not in test.sh / CI.
# Needs the extension built in place first (lightning-py/test.sh runs maturin develop).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! ls lightning-py/python/lightning_quic/_native*.so > /dev/null 2>&1; then
  echo "the extension is not built: run lightning-py/test.sh first" >&2
  exit 1
fi
BTVENV="$PWD/target/btvenv"
if [ ! -x "$BTVENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$BTVENV"
fi
"$BTVENV/bin/pip" install -q --disable-pip-version-check \
  "bittensor==10.5.0" "pytest==9.*" "pytest-asyncio==1.*" "pytest-timeout==2.*" "msgpack==1.*"
# The in-place package (sources plus the abi3 extension maturin develop put beside them).
SITE="$("$BTVENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$PWD/lightning-py/python" > "$SITE/lightning_quic_dev.pth"
exec "$BTVENV/bin/python" -m pytest lightning-py/tests/test_synapse.py \
  lightning-py/tests/test_synapse_bittensor.py -q -p no:cacheprovider -rs "$@"
