#!/usr/bin/env bash
# Copies lit-html's built ES modules (the few the dashboard imports) from the npm registry into
# gyoza_grpc/gateway/ui/vendor/lit-html/. Run by hand to upgrade; the copies are committed, so
# neither a user nor CI needs node. npm checks the package against the registry's integrity.
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-3.3.3}
dest=gyoza_grpc/gateway/ui/vendor/lit-html
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "lit-html@$version" >/dev/null && tar xzf "lit-html-$version.tgz")
rm -rf "$dest"
mkdir -p "$dest/directives"
for file in lit-html.js directive.js directive-helpers.js directives/repeat.js LICENSE; do
  cp "$work/package/$file" "$dest/$file"
done
# The source maps point at sources the package does not ship: leave the comments out.
sed -i '/^\/\/# sourceMappingURL=/d' "$dest"/*.js "$dest"/directives/*.js
integrity=$(cd "$work" && npm view "lit-html@$version" dist.integrity)
cat >"$dest/VERSION" <<TEXT
lit-html $version from the npm registry ($integrity), by scripts/vendor-lit-html.sh
TEXT
echo "vendored lit-html $version into $dest"
