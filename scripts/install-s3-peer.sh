#!/usr/bin/env bash
# Installs the peer S3-compatible server of the S3 benchmark (bench/s3.ts) into .tmp/s3-peer/.
#
# Peer: SeaweedFS (`weed`), built from its Go module (fetched through the Go module proxy).
# Why SeaweedFS: it is a real, production S3-compatible server (not a mock), it is a single
# self-contained Go binary with no runtime configuration, it builds here from the Go module
# proxy (github.com/seaweedfs/seaweedfs is served there as a pseudo-version), and it runs a
# master, a volume server, a filer and the S3 gateway in one process (`weed server -s3`), all of
# which bench/s3.ts binds to 127.0.0.1. Like Stowage it stores small objects packed into large
# volume files, so it is a fair peer for the small-object numbers. (Fallbacks, not needed: MinIO's
# server from its Go module; s3rver from npm only as a last resort, being a mock.)
# bench/s3.ts runs this script itself when the binary is missing (unless --no-install).
#
# Usage: scripts/install-s3-peer.sh            (idempotent; prints the path of the binary)
#   S3_PEER_VERSION=<module version>  override the SeaweedFS module version.
# The binary lands at .tmp/s3-peer/bin/weed (.tmp/ is git-ignored). The first build downloads
# the module and its dependencies through the Go module proxy and compiles them: about 12 CPU
# minutes (22 minutes wall on a busy 2-core VM, version 4.53 = the pseudo-version below); later
# runs are instant. The binary is about 160 MB. Exit status 0 when the binary is present at the end.
set -u

here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/.tmp/s3-peer"
bin="$dest/bin/weed"
version="${S3_PEER_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install-s3-peer: go not found; cannot build SeaweedFS" >&2
  exit 1
fi

mkdir -p "$dest/bin"
module="github.com/seaweedfs/seaweedfs"
echo "install-s3-peer: building $module/weed@$version (several minutes on 2 cores)" >&2
# `go install $module/weed@$version` is refused: SeaweedFS's go.mod has replace directives. So the
# module is fetched with `go mod download` (the Go module proxy) and built as the main module from
# its (read-only) module-cache directory, with its own go.mod and go.sum. CGO is not needed.
# GOFLAGS=-buildvcs=false: the module cache has no VCS metadata.
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
dir="$(go mod download -json "$module@$version" 2>/dev/null | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' | head -n1)"
if [ -z "$dir" ] || [ ! -d "$dir/weed" ]; then
  echo "install-s3-peer: go mod download $module@$version failed" >&2
  go mod download -json "$module@$version" >&2
  exit 1
fi
if ! (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$bin.partial" ./weed) >&2; then
  echo "install-s3-peer: go build failed" >&2
  rm -f "$bin.partial"
  exit 1
fi
mv -f "$bin.partial" "$bin"

if [ -x "$bin" ]; then
  echo "install-s3-peer: $("$bin" version 2>/dev/null | head -n1)" >&2
  echo "$bin"
  exit 0
fi
echo "install-s3-peer: build finished but $bin is missing" >&2
exit 1
