#!/bin/sh
# Entry point of the `alertmanager` container (prom/alertmanager, busybox sh): writes ALERT_WEBHOOK_URL into the
# template alertmanager.yml next to this script, then runs Alertmanager on the result with the arguments given.
# The rendered file lives on a tmpfs (ALERTMANAGER_RENDERED, default /run/alertmanager/alertmanager.yml) readable by
# this user only: the URL often carries a token. deploy/observability/alertmanager/alertmanager.yml says more.
set -eu

here="$(cd "$(dirname "$0")" && pwd)"
template="$here/alertmanager.yml"
rendered="${ALERTMANAGER_RENDERED:-/run/alertmanager/alertmanager.yml}"
url="${ALERT_WEBHOOK_URL:-}"

say() { printf 'alertmanager: %s\n' "$*" >&2; }

if [ -z "$url" ]; then
  say "ALERT_WEBHOOK_URL is required: where the alerts are sent (deploy/observability/alertmanager/alertmanager.yml)"
  exit 1
fi
case "$url" in
  http://?* | https://?*) ;;
  *)
    say "ALERT_WEBHOOK_URL must be an http:// or https:// URL"
    exit 1
    ;;
esac
# Only the characters of a URL (RFC 3986): a quote, a backslash, a space or a line break would end the quoted YAML
# string early and could add settings of its own.
case "$url" in
  *[!-A-Za-z0-9._~:/?#@!\$\&\'\(\)*+,\;=%]*)
    say "ALERT_WEBHOOK_URL holds a character a URL cannot (percent-encode it)"
    exit 1
    ;;
esac

umask 077
# index/substr, not sub(): the URL is copied as it is ("&" and "\" mean nothing to it).
awk -v marker='${ALERT_WEBHOOK_URL}' '{
  i = index($0, marker)
  if (i) $0 = substr($0, 1, i - 1) ENVIRON["ALERT_WEBHOOK_URL"] substr($0, i + length(marker))
  print
}' "$template" >"$rendered"
if grep -q 'ALERT_WEBHOOK_URL}' "$rendered"; then
  say "the template still names ALERT_WEBHOOK_URL after rendering"
  exit 1
fi

exec "${ALERTMANAGER_BIN:-/bin/alertmanager}" --config.file="$rendered" "$@"
