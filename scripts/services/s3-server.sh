#!/usr/bin/env bash
# A real S3-compatible server on 127.0.0.1 for tests (test/backend/s3.test.ts) and for trying the
# S3 backend by hand.
#
#   scripts/services/s3-server.sh install   install the server software (idempotent)
#   scripts/services/s3-server.sh start     start it (installing first if needed), wait until it
#                                           answers, print its endpoint URL
#   scripts/services/s3-server.sh stop      stop the server this script started (only that one)
#   scripts/services/s3-server.sh status    print the endpoint and exit 0 when running, else exit 1
#   scripts/services/s3-server.sh path      print the server binary (exit 1 when not installed)
#   scripts/services/s3-server.sh foreground PORT
#                                           run the server in the foreground (exec; the tests
#                                           spawn this to kill and restart it themselves)
#
# Environment:
#   S3_SERVER_IMPL=moto|seaweedfs   which server (default moto)
#   S3_SERVER_PORT=N                port for `start` (default: a free port chosen at start)
#   MOTO_VERSION=X.Y.Z              moto version to install (default pinned below)
# State (git-ignored): .tmp/services/s3-server.{pid,port,impl,log}; moto's venv in
# .tmp/services/moto/; SeaweedFS's data in .tmp/services/s3-server-data/.
#
# Why moto by default: `pip install 'moto[server]'` into a venv takes about half a minute from
# PyPI (pure-Python wheels, nothing compiled), needs only python3 (3.11 here), and moto's server
# speaks the S3 REST API the AWS SDK uses: buckets, objects, ranged GETs, multipart uploads,
# ListObjectsV2 paging, error codes (NoSuchKey, NoSuchBucket, InvalidRange, InvalidAccessKeyId
# when authentication is on). It keeps objects in memory, so a restart starts empty. SeaweedFS is
# a production server (not an emulator) and is supported here too (S3_SERVER_IMPL=seaweedfs), but
# it has to be built from its Go module by scripts/install-s3-peer.sh: about 22 minutes on a busy
# 2-core machine, too slow for every CI run. The tests use SeaweedFS as well when its binary is
# already present (.tmp/s3-peer/bin/weed) and STOWAGE_S3_TEST_SEAWEEDFS=1.
#
# moto runs single-threaded here (werkzeug's threaded=False, one request at a time, connection
# closed after each reply): its threaded server answers HTTP 500 or drops the connection when one
# key is read while it is being overwritten (its in-memory object buffers are not thread-safe),
# which would make the concurrency tests of the conformance suite flaky for moto's sake.
# MOTO_AUTH=1 turns on moto's credential checks (INITIAL_NO_AUTH_ACTION_COUNT=0): it then knows
# no access key, so every request is refused with InvalidAccessKeyId (the wrong-credentials test).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
state="$here/.tmp/services"
impl="${S3_SERVER_IMPL:-moto}"
moto_version="${MOTO_VERSION:-5.2.5}"
venv="$state/moto/venv"
moto_bin="$venv/bin/moto_server"
weed_bin="$here/.tmp/s3-peer/bin/weed"
pid_file="$state/s3-server.pid"
port_file="$state/s3-server.port"
impl_file="$state/s3-server.impl"
log_file="$state/s3-server.log"

say() { echo "s3-server: $*" >&2; }

server_bin() {
  case "$impl" in
    moto) [ -x "$moto_bin" ] && echo "$moto_bin" ;;
    seaweedfs) [ -x "$weed_bin" ] && echo "$weed_bin" ;;
    *) say "unknown S3_SERVER_IMPL=$impl (moto or seaweedfs)"; return 2 ;;
  esac
}

install() {
  case "$impl" in
    moto)
      # The marker is written last: a half-finished install is never taken for a complete one.
      if [ -x "$moto_bin" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$moto_version" ]; then
        echo "$moto_bin"
        return 0
      fi
      command -v python3 >/dev/null || { say "python3 not found"; return 1; }
      say "installing moto[server]==$moto_version into $venv"
      rm -rf "$venv"
      mkdir -p "$state/moto"
      python3 -m venv "$venv" &&
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$moto_version" >&2 || {
        say "pip install failed"
        rm -rf "$venv"
        return 1
      }
      [ -x "$moto_bin" ] || { say "install finished but $moto_bin is missing"; return 1; }
      echo "$moto_version" >"$venv/.installed"
      echo "$moto_bin"
      ;;
    seaweedfs)
      "$here/scripts/install-s3-peer.sh"
      ;;
    *) say "unknown S3_SERVER_IMPL=$impl (moto or seaweedfs)"; return 2 ;;
  esac
}

# Runs moto's S3 server on 127.0.0.1:$1 in this process (exec), single-threaded.
exec_moto() {
  local python="$venv/bin/python"
  if [ "${MOTO_AUTH:-}" = 1 ]; then export INITIAL_NO_AUTH_ACTION_COUNT=0; fi
  exec "$python" -c '
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
           threaded=False, use_reloader=False, request_handler=MotoRequestHandler)
' "$1"
}

foreground() {
  local port="${1:?usage: $0 foreground PORT}"
  case "$impl" in
    moto)
      [ -x "$moto_bin" ] || { say "moto not installed: run $0 install"; return 1; }
      exec_moto "$port"
      ;;
    *) say "foreground supports moto only"; return 2 ;;
  esac
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The pid in the pid file, when that process is alive and is the server this script started.
our_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq 'moto|weed' || return 1
  echo "$pid"
}

healthy() {
  # Any HTTP answer (even 403 with authentication on) means the S3 endpoint is up.
  curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$1/" | grep -Eq '^[1-5][0-9][0-9]$'
}

status() {
  local pid
  if pid="$(our_pid)" && healthy "$(cat "$port_file")"; then
    echo "http://127.0.0.1:$(cat "$port_file")"
    return 0
  fi
  say "not running"
  return 1
}

start() {
  if status 2>/dev/null; then return 0; fi
  [ -f "$pid_file" ] && stop
  local bin port
  bin="$(server_bin)" || bin="$(install)"
  port="${S3_SERVER_PORT:-$(free_port)}"
  mkdir -p "$state"
  case "$impl" in
    moto)
      setsid "$0" foreground "$port" >"$log_file" 2>&1 </dev/null &
      ;;
    seaweedfs)
      local data="$state/s3-server-data" p
      mkdir -p "$data"
      read -r -a p <<<"$(for _ in 1 2 3 4 5 6 7; do free_port; done | tr '\n' ' ')"
      setsid "$bin" server -ip=127.0.0.1 -ip.bind=127.0.0.1 "-dir=$data" \
        "-master.port=${p[0]}" "-master.port.grpc=${p[1]}" -master.telemetry=false \
        "-volume.port=${p[2]}" "-volume.port.grpc=${p[3]}" -volume.preStopSeconds=0 -volume.max=0 \
        -master.volumeSizeLimitMB=256 -filer=true "-filer.port=${p[4]}" "-filer.port.grpc=${p[5]}" \
        -s3 "-s3.port=$port" "-s3.port.grpc=${p[6]}" >"$log_file" 2>&1 </dev/null &
      ;;
  esac
  echo $! >"$pid_file"
  echo "$port" >"$port_file"
  echo "$impl" >"$impl_file"
  local i
  for i in $(seq 1 240); do
    if ! kill -0 "$(cat "$pid_file")" 2>/dev/null; then
      say "$impl exited during start; log $log_file:"
      tail -n 20 "$log_file" >&2 || true
      rm -f "$pid_file" "$port_file" "$impl_file"
      return 1
    fi
    if healthy "$port"; then
      echo "http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.25
  done
  say "$impl did not answer on port $port within 60 s; log $log_file"
  stop
  return 1
}

stop() {
  local pid
  if pid="$(our_pid)"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    say "stopped pid $pid"
  fi
  rm -f "$pid_file" "$port_file" "$impl_file"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  path) server_bin || { say "$impl not installed: run $0 install"; exit 1; } ;;
  foreground) foreground "${2:-}" ;;
  *) echo "usage: $0 {install|start|stop|status|path|foreground PORT}" >&2; exit 2 ;;
esac
