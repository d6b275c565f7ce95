#!/usr/bin/env bash
# The API contract guard: `buf lint` on proto/ and `buf breaking` against every version of
# proto/ that landed on main before this one (each first-parent commit that changed proto/),
# so a renamed, renumbered or retyped field never reaches the control plane unnoticed.
# Configuration: buf.yaml at the repository root (its lint exceptions keep SPEC-pinned names).
#
# buf comes from the npm registry (@bufbuild/buf) or, failing that, PyPI (buf-bin), installed
# into target/buf. When neither registry answers, the check is skipped with a loud message.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF_VERSION=1.75.0
dir=target/buf
buf=""
for candidate in "$dir/node_modules/.bin/buf" "$dir/py/bin/buf"; do
  if [ -x "$candidate" ] && [ "$("$candidate" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
    buf=$candidate
    break
  fi
done
if [ -z "$buf" ] && command -v npm >/dev/null 2>&1 &&
  npm install --no-save --no-audit --no-fund --silent --prefix "$dir" "@bufbuild/buf@$BUF_VERSION" >/dev/null 2>&1 &&
  [ -x "$dir/node_modules/.bin/buf" ]; then
  buf=$dir/node_modules/.bin/buf
fi
if [ -z "$buf" ] && command -v python3 >/dev/null 2>&1 &&
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir/py" "buf-bin==$BUF_VERSION" >/dev/null 2>&1 &&
  [ -x "$dir/py/bin/buf" ]; then
  buf=$dir/py/bin/buf
fi
if [ -z "$buf" ]; then
  echo "############################################################################" >&2
  echo "## SKIPPED: buf lint / buf breaking — buf $BUF_VERSION could not be installed" >&2
  echo "## from npm (@bufbuild/buf) or PyPI (buf-bin). The proto contract is UNCHECKED." >&2
  echo "############################################################################" >&2
  exit 0
fi

"$buf" lint
echo "buf lint: ok"

if [ "$(git rev-parse --is-shallow-repository 2>/dev/null || echo true)" = "true" ]; then
  echo "buf breaking: WARNING: shallow or missing git history; only the commits present are checked" >&2
fi
checked=0
for commit in $(git log --first-parent --format=%H -- proto/ 2>/dev/null); do
  "$buf" breaking --against ".git#ref=$commit,subdir=proto"
  checked=$((checked + 1))
done
echo "buf breaking: ok against $checked landed version(s) of proto/"
