#!/usr/bin/env bash
# Installs the peer tools of the ingest benchmark (bench/ingest.ts) from Debian's apt when missing:
#   restic      (Debian 12: 0.14)
#   borgbackup  (Debian 12: 1.2.4; the command is `borg`)
#   time        (GNU time: /usr/bin/time -f %M gives a process's peak RSS)
# Idempotent and non-interactive; prints the versions it finds. Needs root (or sudo) only when
# something is missing. Exit status 0 when all three are present at the end, 1 otherwise.
set -u

missing=()
command -v restic >/dev/null 2>&1 || missing+=(restic)
command -v borg >/dev/null 2>&1 || missing+=(borgbackup)
[ -x /usr/bin/time ] || missing+=(time)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-bench-tools: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
      echo "install-bench-tools: not root and no sudo; cannot install ${missing[*]}" >&2
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if command -v apt-get >/dev/null 2>&1; then
    # Try without an index refresh first (fast when the lists are fresh), then with one.
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
      { $SUDO apt-get update -q >/dev/null 2>&1 &&
        $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; } ||
      echo "install-bench-tools: apt-get install ${missing[*]} failed" >&2
  else
    echo "install-bench-tools: apt-get not found; install ${missing[*]} by hand" >&2
  fi
fi

status=0
if command -v restic >/dev/null 2>&1; then
  echo "restic: $(restic version 2>/dev/null | head -n1)"
else
  echo "restic: missing"; status=1
fi
if command -v borg >/dev/null 2>&1; then
  echo "borg: $(borg --version 2>/dev/null | head -n1)"
else
  echo "borg: missing"; status=1
fi
if [ -x /usr/bin/time ]; then
  echo "time: $(/usr/bin/time --version 2>&1 | head -n1)"
else
  echo "time: missing"; status=1
fi
exit $status
