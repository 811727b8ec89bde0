#!/usr/bin/env bash
# Command of the `kafka` service of docker-compose.yml (image apache/kafka): writes the broker's JAAS file from
# ADMIN_PASSWORD, then runs the image's own start script. The image turns KAFKA_* variables into server.properties
# but drops any value with an "=" in it, so a JAAS configuration cannot come from the environment.
#
# KafkaServer: PLAIN for the super user `admin` (the broker listener: the broker itself and the kafka-init job;
# its one user is defined here), SCRAM-SHA-512 for everyone else (their credentials live in the cluster
# metadata, created by kafka-init). deploy/kafka/README.md.
set -euo pipefail

: "${ADMIN_PASSWORD:?ADMIN_PASSWORD, the password of the Kafka super user, is required}"
if [[ ! "$ADMIN_PASSWORD" =~ ^[A-Za-z0-9._~-]+$ ]]; then
  echo "broker.sh: the admin password must be URL-safe characters only (A-Z a-z 0-9 . _ ~ -)" >&2
  exit 1
fi

umask 077
dir="${TMPDIR:-/tmp}"
jaas="$dir/tweetshop_kafka_server_jaas.conf"
cat >"$jaas" <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
    username="admin" password="${ADMIN_PASSWORD}" user_admin="${ADMIN_PASSWORD}";
  org.apache.kafka.common.security.scram.ScramLoginModule required;
};
JAAS
# The health check's client settings (docker-compose.yml: kafka-broker-api-versions.sh --command-config).
cat >"$dir/tweetshop_admin_client.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${ADMIN_PASSWORD}";
PROPERTIES
unset ADMIN_PASSWORD

export KAFKA_OPTS="${KAFKA_OPTS:+$KAFKA_OPTS }-Djava.security.auth.login.config=$jaas"
exec "${KAFKA_DOCKER_RUN:-/etc/kafka/docker/run}" "$@"
