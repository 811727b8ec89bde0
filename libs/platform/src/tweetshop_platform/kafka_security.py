"""TLS and SASL for every Kafka client a process builds: one function turns settings into client arguments.

``client_security(settings)`` answers the keyword arguments aiokafka's producer, consumer and admin
client take (``security_protocol``, ``ssl_context``, ``sasl_mechanism``, ``sasl_plain_username``,
``sasl_plain_password``); ``broker_security(settings)`` answers the same as the ``faststream.security``
object FastStream's ``KafkaBroker`` takes (it turns it back into those arguments, and shows it in AsyncAPI).
Every client of the services (broker, outbox relay, topic admin, lag reader, tracking's live feed) and of
the ``tweetshop`` command goes through them, so one set of ``TWEETSHOP_KAFKA_*`` variables secures them all.

This module imports no FastStream at import time: the ``tweetshop`` command uses it too.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


class KafkaSecurityError(ValueError):
    """The Kafka security settings do not make a usable client (the message names the variable to fix)."""


class KafkaSecuritySettings(Protocol):
    """The ``kafka_*`` security fields of ``ServiceSettings`` and ``CliSettings`` (read-only here)."""

    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str: ...
    @property
    def kafka_sasl_username(self) -> str: ...
    @property
    def kafka_sasl_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_cafile(self) -> Path | None: ...
    @property
    def kafka_ssl_certfile(self) -> Path | None: ...
    @property
    def kafka_ssl_keyfile(self) -> Path | None: ...
    @property
    def kafka_ssl_key_password(self) -> SecretStr | None: ...
    @property
    def kafka_ssl_check_hostname(self) -> bool: ...


def uses_tls(settings: KafkaSecuritySettings) -> bool:
    """Whether the connection to the broker is encrypted (SSL or SASL_SSL)."""
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: KafkaSecuritySettings) -> bool:
    """Whether the client authenticates with a user name and password (SASL_PLAINTEXT or SASL_SSL)."""
    return settings.kafka_security_protocol.startswith("SASL_")


def ssl_context(settings: KafkaSecuritySettings) -> ssl.SSLContext:
    """A client TLS context: the broker's certificate checked against the CA file (the system's CAs without one),
    its host name checked unless ``kafka_ssl_check_hostname`` is off, and a client certificate when one is given."""
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(f"TWEETSHOP_KAFKA_SSL_CAFILE={cafile}: cannot load it ({exc})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Without the host name check any certificate the CA signed would do; the chain itself is always verified.
    context.check_hostname = settings.kafka_ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    certfile, keyfile = settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile
    if keyfile and not certfile:
        raise KafkaSecurityError("TWEETSHOP_KAFKA_SSL_KEYFILE is set without TWEETSHOP_KAFKA_SSL_CERTFILE")
    if certfile:
        password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                str(certfile),
                str(keyfile) if keyfile else None,
                password.get_secret_value() if password else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(
                f"TWEETSHOP_KAFKA_SSL_CERTFILE={certfile} / TWEETSHOP_KAFKA_SSL_KEYFILE={keyfile}: "
                f"cannot load the client certificate ({exc})"
            ) from None
    return context


def _sasl_credentials(settings: KafkaSecuritySettings) -> tuple[str, str]:
    username = settings.kafka_sasl_username
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    if not username or not password:
        raise KafkaSecurityError(
            f"TWEETSHOP_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs TWEETSHOP_KAFKA_SASL_USERNAME "
            "and TWEETSHOP_KAFKA_SASL_PASSWORD (or TWEETSHOP_KAFKA_SASL_PASSWORD_FILE)"
        )
    return username, password


def client_security(settings: KafkaSecuritySettings) -> dict[str, Any]:
    """The security keyword arguments of an aiokafka producer, consumer or admin client (empty for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        raise KafkaSecurityError(
            f"TWEETSHOP_KAFKA_SECURITY_PROTOCOL={protocol}: one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        if settings.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise KafkaSecurityError(
                f"TWEETSHOP_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}: one of {', '.join(SASL_MECHANISMS)}"
            )
        username, password = _sasl_credentials(settings)
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": username,
            "sasl_plain_password": password,
        }
    return options


def broker_security(settings: KafkaSecuritySettings) -> BaseSecurity | None:
    """The same as ``client_security``, as the ``security`` object of FastStream's ``KafkaBroker``."""
    from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

    options = client_security(settings)
    if not options:
        return None
    context: ssl.SSLContext | None = options.get("ssl_context")
    use_ssl = context is not None
    if "sasl_mechanism" not in options:
        return BaseSecurity(ssl_context=context, use_ssl=use_ssl)
    sasl = {SASL_MECHANISMS[0]: SASLScram256, SASL_MECHANISMS[1]: SASLScram512, SASL_MECHANISMS[2]: SASLPlaintext}
    security: BaseSecurity = sasl[options["sasl_mechanism"]](
        options["sasl_plain_username"], options["sasl_plain_password"], ssl_context=context, use_ssl=use_ssl
    )
    return security


def describe(settings: KafkaSecuritySettings) -> str:
    """One line for logs and error messages: the protocol, mechanism and user, never the password."""
    protocol = settings.kafka_security_protocol
    if not uses_sasl(settings):
        return protocol
    return f"{protocol} {settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username or '(no user)'}"
