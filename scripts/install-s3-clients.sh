#!/usr/bin/env bash
# Installs the command-line S3 clients used by test/server/clients.test.ts from Debian's apt when
# missing:
#   awscli  (Debian 12: 2.9; the command is /usr/bin/aws)
#   rclone  (Debian 12: 1.60)
#   s3cmd   (Debian 12: 2.3)
# A package counts as missing when dpkg does not list it as installed (an `aws` found elsewhere on
# PATH, e.g. from pip, does not count: the tests prefer the Debian binaries in /usr/bin).
# Idempotent and non-interactive; prints the versions it finds. Needs root (or sudo) only when
# something is missing. Exit status 0 when all three commands are present at the end, 1 otherwise.
set -u

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for pkg in awscli rclone s3cmd; do
  installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-s3-clients: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
      echo "install-s3-clients: not root and no sudo; cannot install ${missing[*]}" >&2
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  if command -v apt-get >/dev/null 2>&1; then
    # Try without an index refresh first (fast when the lists are fresh), then with one.
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
      { $SUDO apt-get update -q >/dev/null 2>&1 &&
        $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; } ||
      echo "install-s3-clients: apt-get install ${missing[*]} failed" >&2
  else
    echo "install-s3-clients: apt-get not found; install ${missing[*]} by hand" >&2
  fi
fi

status=0
# aws: the Debian binary when there is one, else whatever is on PATH.
AWS=/usr/bin/aws
[ -x "$AWS" ] || AWS="$(command -v aws 2>/dev/null || true)"
if [ -n "$AWS" ]; then
  echo "awscli: $("$AWS" --version 2>&1 | head -n1) ($AWS)"
else
  echo "awscli: missing"; status=1
fi
if command -v rclone >/dev/null 2>&1; then
  echo "rclone: $(rclone version 2>/dev/null | head -n1)"
else
  echo "rclone: missing"; status=1
fi
if command -v s3cmd >/dev/null 2>&1; then
  echo "s3cmd: $(s3cmd --version 2>/dev/null | head -n1)"
else
  echo "s3cmd: missing"; status=1
fi
exit $status
