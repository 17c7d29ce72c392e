#!/usr/bin/env bash
# Installs what test/fs/mount.test.ts runs on a FUSE mount, from Debian's apt when missing:
#   rsync, sqlite3, git, tar  (the real tools the mount is tested with)
#   util-linux mount/umount   (Stowage mounts through `mount -i -t fuse.stowage`; always present)
# and checks that FUSE is usable: /dev/fuse exists and `fuse` is in /proc/filesystems (mounting
# needs root). Idempotent, non-interactive; exit status 0 when everything is present at the end.
set -u

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for pkg in rsync sqlite3 git tar; do
  installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-fs-tools: installing ${missing[*]}" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null 2>&1 &&
      $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; } ||
    echo "install-fs-tools: apt-get install ${missing[*]} failed" >&2
fi

# pjdfstest, the POSIX file-system conformance suite (its Rust rewrite, crate 0.2.2 from crates.io),
# built into .tmp/pjdfstest (never committed) for test/fs/pjdfstest.test.ts. Optional: without cargo
# the test skips with a message.
PJD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tmp/pjdfstest"
if [ ! -x "$PJD_ROOT/bin/pjdfstest" ] && command -v cargo >/dev/null 2>&1; then
  echo "install-fs-tools: building pjdfstest 0.2.2 with cargo (a few minutes)" >&2
  cargo install --locked pjdfstest --version 0.2.2 --root "$PJD_ROOT" >/dev/null 2>&1 ||
    echo "install-fs-tools: cargo install pjdfstest failed (test/fs/pjdfstest.test.ts will skip)" >&2
fi
if [ -x "$PJD_ROOT/bin/pjdfstest" ]; then echo "pjdfstest: $("$PJD_ROOT/bin/pjdfstest" --version 2>&1)"; else echo "pjdfstest: not built (optional)"; fi

status=0
for cmd in rsync sqlite3 git tar mount umount; do
  if command -v "$cmd" >/dev/null 2>&1; then echo "$cmd: $("$cmd" --version 2>&1 | head -n1)"; else echo "$cmd: missing"; status=1; fi
done
if [ -c /dev/fuse ] && grep -qw fuse /proc/filesystems; then echo "fuse: /dev/fuse present"; else echo "fuse: /dev/fuse or the fuse module missing"; status=1; fi
[ "$(id -u)" -eq 0 ] || echo "fuse: not root, so the mount tests will be skipped"
exit $status
