#!/usr/bin/env bash
# The `kafka-init` one-shot of docker-compose.yml (image apache/kafka): as the super user `admin`, creates the
# topics, one SCRAM-SHA-512 user per service and the operator, and the ACLs derived from the topology
# (provision.generated.sh, written by `python -m tweetshop_cli.acls --script`). Every step is idempotent: run it
# again (`docker compose up kafka-init`) after changing a password or the topology. deploy/kafka/README.md.
#
# Environment: KAFKA_ADMIN_PASSWORD (the super user's, PLAIN on the broker listener), BOOTSTRAP (that listener),
# <USER>_KAFKA_PASSWORD for each user of TWEETSHOP_KAFKA_USERS (CATALOG_KAFKA_PASSWORD, ..., OPERATOR_KAFKA_PASSWORD).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"
BOOTSTRAP="${BOOTSTRAP:?BOOTSTRAP (the broker listener, e.g. kafka:29094) is required}"
: "${KAFKA_ADMIN_PASSWORD:?KAFKA_ADMIN_PASSWORD is required}"
MIN_PASSWORD_LENGTH=32

# The admin's client settings live in a file only this process reads (never on a command line: `ps` shows those).
umask 077
ADMIN_CONFIG="$(mktemp)"
trap 'rm -f "$ADMIN_CONFIG"' EXIT
cat >"$ADMIN_CONFIG" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
EOF

# shellcheck source=provision.generated.sh
. "$here/provision.generated.sh"

say() { printf 'kafka-init: %s\n' "$*"; }

# A password goes into `SCRAM-SHA-512=[password=...]`: a comma, bracket or quote would end it early. URL-safe
# characters only (python -c "import secrets; print(secrets.token_urlsafe(48))" makes one).
check_password() {
  local variable="$1" value="$2"
  if [[ ! "$value" =~ ^[A-Za-z0-9._~-]+$ ]]; then
    say "$variable must be URL-safe characters only (A-Z a-z 0-9 . _ ~ -)" >&2
    return 1
  fi
  if ((${#value} < MIN_PASSWORD_LENGTH)); then
    say "$variable is ${#value} characters, shorter than $MIN_PASSWORD_LENGTH" >&2
    return 1
  fi
}

say "waiting for the broker at $BOOTSTRAP"
for _ in $(seq 1 60); do
  if "$KAFKA_BIN/kafka-broker-api-versions.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" >/dev/null 2>&1; then
    break
  fi
  sleep 2
done

say "topics"
tweetshop_create_topics

for user in $TWEETSHOP_KAFKA_USERS; do
  variable="$(printf '%s' "$user" | tr '[:lower:]-' '[:upper:]_')_KAFKA_PASSWORD"
  password="${!variable:-}"
  if [[ -z "$password" ]]; then
    say "$variable is required" >&2
    exit 1
  fi
  check_password "$variable" "$password"
  say "SCRAM-SHA-512 credentials of User:$user"
  # On the command line: only this one-shot container's own processes can see it, for the seconds it runs.
  "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" \
    --alter --entity-type users --entity-name "$user" --add-config "SCRAM-SHA-512=[iterations=8192,password=$password]"
done

say "ACLs"
tweetshop_apply_acls
"$KAFKA_BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --list
say "done"
