"""Settings of the `tweetshop` command: the same TWEETSHOP_* variables the services read, plus a few of its own."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict
from tweetshop_platform.settings import KafkaClientSecurity, SecretFileSettings


class CliSettings(SecretFileSettings, KafkaClientSecurity):
    """Where the broker and the database are; command-line options override these.

    Read from the arguments, then TWEETSHOP_<FIELD>_FILE for secrets (as the services read them), then
    TWEETSHOP_<FIELD> (SecretFileSettings': not TWEETSHOP_SECRETS_DIR)."""

    model_config = SettingsConfigDict(env_prefix="TWEETSHOP_", extra="ignore")

    kafka_bootstrap_servers: str = Field(default="localhost:9092", description="The broker (as the services use it)")
    # Kafka client security (TWEETSHOP_KAFKA_SECURITY_PROTOCOL, …): KafkaClientSecurity's fields, as the services
    # read them; with ACLs on, as the operator principal (deploy/kafka/README.md).
    database_url: SecretStr = Field(
        default=SecretStr("postgresql://postgres@localhost:5432/tweetshop"),
        description="A DSN that can use the schema of the service whose read model `replay` rebuilds",
    )
    topic_namespace: str = Field(
        default="", pattern=r"^[a-z0-9_.-]*$", description="Topic and group prefix (empty in production)"
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Give up on an unreachable broker or database")
    operator_key: SecretStr | None = Field(
        default=None,
        description="The operator key: `dlq replay`, `dlq dismiss` and `replay` act for every merchant and buyer",
    )
    operator_check_url: str = Field(
        default="http://localhost:8003",
        description="Any running tweetshop service (checkout by default): it confirms the operator key first",
    )
