#!/usr/bin/env bash
# Regenerates generated/ from protos/ with grpcio-tools and mypy-protobuf.
# CI runs it and fails when the committed code differs from what it makes.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
# The protoc plugins (protoc-gen-mypy, protoc-gen-mypy_grpc) sit beside that python.
PATH="$(dirname "$(command -v "$python")"):$PATH"
rm -rf generated/gyoza
mkdir -p generated
mapfile -t protos < <(cd protos && find . -name '*.proto' | sed 's|^\./||' | sort)
"$python" -m grpc_tools.protoc \
  -I protos \
  --python_out=generated \
  --grpc_python_out=generated \
  --mypy_out=generated \
  --mypy_grpc_out=generated \
  "${protos[@]}"
# generated/ is a source root: `from gyoza.v1 import runs_pb2`.
find generated/gyoza -type d -exec sh -c 'touch "$1/__init__.py"; touch "$1/py.typed"' _ {} \;
