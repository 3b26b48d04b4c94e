#!/usr/bin/env bash
# Builds the Python package into a venv under target/ and runs its pytest suite.
# Installs what it needs itself (a venv, maturin, pytest, msgpack); needs python3 >= 3.10
# with the venv module. Extra arguments go to pytest. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYVENV="$PWD/target/pyvenv"
if [ ! -x "$PYVENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$PYVENV"
fi
"$PYVENV/bin/pip" install -q --disable-pip-version-check \
  "maturin==1.16.*" "pytest==9.*" "pytest-asyncio==1.*" "pytest-timeout==2.*" "msgpack==1.*" "pydantic==2.*"
# The cross-implementation tests run the workspace's `lightning` binary.
cargo build -q -p lightning-cli
VIRTUAL_ENV="$PYVENV" "$PYVENV/bin/maturin" develop -q -m lightning-py/Cargo.toml
exec "$PYVENV/bin/python" -m pytest lightning-py/tests -q -p no:cacheprovider \
  --junitxml=target/pytest.xml "$@"
