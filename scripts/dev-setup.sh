#!/usr/bin/env bash
# Sets up a development checkout: .venv with gyoza-grpc installed editable, plus the `dev`
# extra (pytest, ruff, mypy, buf, grpcurl, ...). Idempotent: when .venv already matches
# pyproject.toml it checks that and returns in well under a second.
#
#   ./scripts/dev-setup.sh            # PYTHON=python3.12 ./scripts/dev-setup.sh to pick a Python
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=.venv
stamp=$venv/.gyoza-dev-setup

if [[ ! -x $venv/bin/python ]]; then
  python=${PYTHON:-python3}
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "dev-setup: gyoza-grpc needs Python >= 3.11; '$python' is not (set PYTHON=...)" >&2
    exit 1
  fi
  echo "dev-setup: creating $venv with $("$python" --version)" >&2
  "$python" -m venv "$venv"
fi

# The stamp records which pyproject.toml was installed; the import check catches a venv whose
# editable install points at another checkout or lost a package.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -x $venv/bin/gyoza-grpc ]] &&
  "$venv/bin/python" -I - "$root" 2>/dev/null <<'EOF'
import sys
from pathlib import Path

import gyoza.v1.runs_pb2
import gyoza_grpc

root = Path(sys.argv[1]).resolve()
for module in (gyoza_grpc, gyoza.v1.runs_pb2):
    if root not in Path(module.__file__).resolve().parents:
        sys.exit(1)
EOF
then
  exit 0
fi

echo "dev-setup: installing gyoza-grpc (editable) with the dev extra into $venv" >&2
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
echo "$want" >"$stamp"
echo "dev-setup: done ($venv/bin/gyoza-grpc, $venv/bin/pytest, $venv/bin/grpcurl)" >&2
