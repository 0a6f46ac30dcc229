#!/usr/bin/env bash
# Fails when protos/ breaks the contract of an earlier version (docs/contract.md): `buf breaking`
# with buf.yaml's rules (FILE: wire, JSON and generated-code compatibility) against each git
# ref given, by default the commit before this one (HEAD~1, the first parent: the previous main
# after a merge) and the newest `v*` tag when there is one. CI runs it; run it before you push.
#
#   ./scripts/buf-breaking.sh                 # against HEAD~1 and the newest v* tag
#   ./scripts/buf-breaking.sh origin/main     # against whatever refs you name
#
# A ref that does not exist (the first commit, a shallow clone) is reported and skipped; one
# whose tree has no buf.yaml (older than the contract) too.
set -euo pipefail
cd "$(dirname "$0")/.."

buf=${BUF:-buf}
if ! command -v "$buf" >/dev/null; then
  echo "buf-breaking: buf not found (it comes with the dev extra: .venv/bin/buf)" >&2
  exit 2
fi

refs=("$@")
if ((${#refs[@]} == 0)); then
  refs=(HEAD~1)
  tag=$(git tag --list 'v*' --sort=-v:refname | head -n1)
  [[ -n $tag ]] && refs+=("$tag")
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
status=0
for ref in "${refs[@]}"; do
  if ! commit=$(git rev-parse --verify --quiet "$ref^{commit}"); then
    echo "buf-breaking: no commit $ref here (first commit or shallow clone): not compared"
    continue
  fi
  old="$scratch/${commit}"
  mkdir -p "$old"
  if ! git cat-file -e "$commit:buf.yaml" 2>/dev/null; then
    echo "buf-breaking: $ref has no buf.yaml: not compared"
    continue
  fi
  git archive "$commit" buf.yaml protos | tar -x -C "$old"
  if "$buf" breaking --against "$old"; then
    echo "buf-breaking: protos/ keeps the contract of $ref (${commit:0:12})"
  else
    echo "buf-breaking: protos/ breaks the contract of $ref (${commit:0:12}): see docs/contract.md" >&2
    status=1
  fi
done
exit "$status"
