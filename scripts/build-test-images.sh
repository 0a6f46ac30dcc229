#!/usr/bin/env bash
# Builds the container images the docker tests and bench/containers.py run, on the engine
# that `docker` reaches (DOCKER_HOST or the local socket). No registry is needed: each image is
# the host's static busybox (Debian's busybox-static) plus one op script, imported as a
# filesystem tarball, tagged gyoza-test/NAME:1. An image already present with the same op script
# (its label gyoza.test-image-op) is kept (idempotent; --force rebuilds them all).
#
# --python also makes gyoza-test/python:1, a minimal Debian with python3 (debootstrap from the
# archive apt uses; a few minutes, about 140 MB), the base the example op's Dockerfile is built
# on in the tests where no public Python image can be pulled.
#
#   echo      the op contract: reads {"n": N, "steps": S} on stdin, writes "progress: P" lines
#             and an "info:" line on stderr, prints {"n": N, "doubled": 2N, "run": RUN_ID} (or
#             the raw stdin when it has no "n")
#   noop      prints {} and exits (bench/containers.py)
#   sleep     sleeps SECONDS from {"seconds": SECONDS} (default 300), printing progress
#   oom       allocates MB megabytes from {"mb": MB} (default 200) in one buffer
#   env       prints the GYOZA_* and NVIDIA_* variables it sees as a JSON object
#   exit      writes {"stderr": TEXT} to stderr and exits with {"code": CODE}
#   badjson   prints text that is not JSON
#   big       prints a JSON object of about {"kb": KB} kilobytes
set -euo pipefail

PREFIX=${GYOZA_TEST_IMAGE_PREFIX:-gyoza-test}
TAG=1
force=false
python=false
for arg in "$@"; do
  case $arg in
    --force) force=true ;;
    --python) python=true ;;
    *) echo "build-test-images: unknown argument $arg" >&2; exit 2 ;;
  esac
done

BUSYBOX=${BUSYBOX:-$(command -v busybox || true)}
if [[ -z $BUSYBOX ]] || ! "$BUSYBOX" --list >/dev/null 2>&1; then
  echo "build-test-images: no busybox binary (apt-get install busybox-static)" >&2
  exit 2
fi
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "build-test-images: $BUSYBOX is not static (apt-get install busybox-static)" >&2
  exit 2
fi

# op NAME: the script body of /op (run by /bin/sh; `j KEY` reads a number or word from stdin's
# JSON, crudely but enough for these fixed inputs).
op_script() {
  local helpers='
input=$(cat)
j() { printf %s "$input" | sed -n "s/.*\"$1\" *: *\"\{0,1\}\([^\",}]*\).*/\1/p"; }
'
  case $1 in
    echo)
      cat <<EOF
$helpers
n=\$(j n); steps=\$(j steps); steps=\${steps:-2}
i=1
while [ "\$i" -le "\$steps" ]; do
  echo "progress: \$((i * 100 / (steps + 1)))" >&2
  i=\$((i + 1))
done
echo "info: hello from \$GYOZA_RUN_ID attempt \$GYOZA_ATTEMPT" >&2
echo "a line only for the log" >&2
if [ -n "\$n" ]; then
  printf '{"n": %s, "doubled": %s, "run": "%s"}\n' "\$n" "\$((n * 2))" "\$GYOZA_RUN_ID"
else
  printf '%s\n' "\$input"
fi
EOF
      ;;
    noop) echo 'cat >/dev/null; echo "{}"' ;;
    sleep)
      cat <<EOF
$helpers
s=\$(j seconds); s=\${s:-300}
i=0
while [ "\$i" -lt "\$s" ]; do echo "progress: \$((i * 100 / s))" >&2; sleep 1; i=\$((i + 1)); done
echo '{"slept": '"\$s"'}'
EOF
      ;;
    oom)
      cat <<EOF
$helpers
mb=\$(j mb); mb=\${mb:-200}
# The op itself holds the buffer (exec): an OOM kill ends the op, as it would a real one.
exec dd if=/dev/zero of=/dev/null bs=\${mb}M count=1
EOF
      ;;
    env)
      cat <<'EOF'
cat >/dev/null
printf '{'
env | grep -E '^(GYOZA|NVIDIA)_' | sort | sed 's/^\([^=]*\)=\(.*\)$/"\1": "\2"/' | paste -s -d, -
printf '}\n'
EOF
      ;;
    exit)
      cat <<EOF
$helpers
code=\$(j code); text=\$(j stderr)
echo "\$text" >&2
exit "\${code:-3}"
EOF
      ;;
    badjson) echo 'cat >/dev/null; echo "this is not json"' ;;
    big)
      cat <<EOF
$helpers
kb=\$(j kb); kb=\${kb:-2048}
printf '{"blob": "'
head -c \$((kb * 1024)) /dev/zero | tr '\\0' a
printf '"}\n'
EOF
      ;;
    *) return 1 ;;
  esac
}

names=(echo noop sleep oom env exit badjson big)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

root=$work/root
mkdir -p "$root/bin" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/etc"
cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$root/etc/passwd"

built=0
for name in "${names[@]}"; do
  image=$PREFIX/$name:$TAG
  op_script "$name" >"$root/op"
  # An image is kept only while it holds this script's op (a changed op is rebuilt).
  digest=$(sha256sum "$root/op" | cut -c1-16)
  label='{{ index .Config.Labels "gyoza.test-image-op" }}'
  if ! $force && [[ $(docker image inspect -f "$label" "$image" 2>/dev/null) == "$digest" ]]; then
    continue
  fi
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh", "/op"]' -c "LABEL gyoza.test-image=$name" \
    -c "LABEL gyoza.test-image-op=$digest" - "$image" >/dev/null
  built=$((built + 1))
done
if $python && { $force || ! docker image inspect "$PREFIX/python:$TAG" >/dev/null 2>&1; }; then
  command -v debootstrap >/dev/null || { echo "build-test-images: apt-get install debootstrap" >&2; exit 2; }
  mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  mirror=${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  debootstrap --variant=minbase --include=python3 "$suite" "$work/python" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; echo "build-test-images: debootstrap failed" >&2; exit 1; }
  tar -C "$work/python" -c . | docker import -c 'CMD ["python3"]' - "$PREFIX/python:$TAG" >/dev/null
  echo "build-test-images: $PREFIX/python:$TAG built (debootstrap $suite from $mirror)"
fi
echo "build-test-images: ${#names[@]} images ($PREFIX/{$(IFS=,; echo "${names[*]}")}:$TAG), $built built"
