#!/usr/bin/env bash
# The guard of the operations files in ops/: `promtool check rules` and `promtool test rules`
# on the Prometheus alert rules, and every query of the Grafana dashboard checked as PromQL
# (wrapped in recording rules for `promtool check rules`).
#
# promtool comes from PATH, or from the distribution's `prometheus` package, downloaded with
# apt-get and unpacked (not installed: no Prometheus server is set up or started) into
# target/promtool. When that is not possible (no apt, no network, not root), the check is
# skipped with a loud message and exit 0: tests/api/ops.rs (`cargo test`) still parses both
# files and checks every series they name against the real server's /metrics.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/promtool
promtool=""
if command -v promtool >/dev/null 2>&1; then
  promtool=$(command -v promtool)
elif [ -x "$dir/usr/bin/promtool" ]; then
  promtool=$PWD/$dir/usr/bin/promtool
elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
  mkdir -p "$dir"
  download() { (cd "$dir" && timeout 300 apt-get download prometheus) >/dev/null 2>&1; }
  if download || { timeout 300 apt-get update -qq >/dev/null 2>&1 && download; }; then
    dpkg-deb -x "$(ls "$dir"/prometheus_*.deb | head -n 1)" "$dir" && rm -f "$dir"/prometheus_*.deb
    [ -x "$dir/usr/bin/promtool" ] && promtool=$PWD/$dir/usr/bin/promtool
  fi
fi
if [ -z "$promtool" ]; then
  echo "############################################################################" >&2
  echo "## SKIPPED: promtool check/test rules — promtool is not on PATH and the" >&2
  echo "## distribution's prometheus package could not be downloaded. The alert rules" >&2
  echo "## and the dashboard are still checked by tests/api/ops.rs (cargo test)." >&2
  echo "############################################################################" >&2
  exit 0
fi

"$promtool" check rules ops/prometheus/alerts.yml
(cd ops/prometheus && "$promtool" test rules alerts.test.yml)

if command -v python3 >/dev/null 2>&1; then
  rules=target/ops-check/dashboard-rules.yml
  mkdir -p "$(dirname "$rules")"
  python3 - ops/grafana/capydb-auth-sync.json "$rules" <<'EOF'
import json, sys
dashboard = json.load(open(sys.argv[1]))
out = ["groups:", "  - name: dashboard-queries", "    rules:"]
n = 0
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        n += 1
        # Grafana's interval variable becomes a fixed range; JSON strings are YAML strings.
        expr = target["expr"].replace("$__rate_interval", "5m").replace("$__interval", "1m")
        out += [f"      - record: dashboard:query_{n}", f"        expr: {json.dumps(expr)}"]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print(f"dashboard: {n} queries")
EOF
  "$promtool" check rules "$rules"
else
  echo "dashboard queries: SKIPPED (no python3 to read the JSON); tests/api/ops.rs still checks them" >&2
fi
echo "ops: ok"
