#!/usr/bin/env bash
# Offline checks of the monitoring configuration: Prometheus config and rules, the rules' unit
# tests, the Alertmanager config and where its routing tree sends each kind of alert.
set -euo pipefail
cd "$(dirname "$0")/../.."

prom=deploy/prometheus
am=deploy/alertmanager/alertmanager.yml

# The autoheal job reads the metrics token from the compose secret's path, which promtool wants to
# exist: check a copy that points at a stand-in file instead (rules resolve next to the copy).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$prom"/rules "$tmp"/
echo stand-in >"$tmp/autoheal_metrics_token"
sed "s|/run/secrets/autoheal_metrics_token|$tmp/autoheal_metrics_token|" "$prom/prometheus.yml" >"$tmp/prometheus.yml"
grep -q "credentials_file: $tmp/autoheal_metrics_token" "$tmp/prometheus.yml"
promtool check config "$tmp/prometheus.yml"
promtool check rules "$prom"/rules/*.yml
promtool test rules "$prom"/tests/*.yml
amtool check-config "$am"

# labels -> the receivers that must get the alert, in order
routes=(
  'alertname=ContainerUnhealthy severity=critical container=web|autoheal-webhook,ops-notify'
  'alertname=DiskFull remediate=true|autoheal-webhook,ops-notify'
  'alertname=ContainerUnhealthy remediate=false|ops-notify'
  'alertname=AutohealHeartbeat severity=none|autoheal-webhook'
  'alertname=AutohealServiceDown service=autoheal severity=critical|autoheal-notify'
  'alertname=AutohealEscalation service=autoheal incident_alertname=ContainerUnhealthy|autoheal-notify'
  'alertname=SomethingElse severity=warning|ops-notify'
)
for route in "${routes[@]}"; do
  labels=${route%%|*}
  expected=${route##*|}
  # shellcheck disable=SC2086 # labels are separate arguments
  amtool config routes test --config.file="$am" --verify.receivers="$expected" $labels >/dev/null 2>&1 \
    || { echo "routing: {$labels} should go to $expected" >&2; exit 1; }
  echo "routing: {$labels} -> $expected"
done
