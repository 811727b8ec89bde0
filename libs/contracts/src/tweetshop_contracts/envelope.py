"""The envelope every message on every tweetshop topic carries (contract v1)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must carry a timezone (UTC)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]
Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency code, upper case", examples=["EUR"])
]
MinorAmount = Annotated[int, Field(ge=0, description="Amount in the currency's minor unit (cents)")]


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(UTC)


class Envelope(BaseModel):
    """Fields every event carries besides its own; ``event_id`` is the consumers' dedupe key."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    TOPIC: ClassVar[str] = ""
    KEY_FIELD: ClassVar[str] = ""

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique id of this event: the dedupe key")
    event_type: str = Field(description="Name of the event type, also sent as the `event_type` header")
    schema_version: int = Field(default=1, ge=1, description="Version of this event's schema")
    occurred_at: UtcDatetime = Field(default_factory=utc_now, description="When it happened (UTC, ISO-8601)")
    producer: str = Field(description="Service that produced the event")
    correlation_id: str = Field(
        min_length=1,
        max_length=200,
        description="Follows one purchase from tweet to doorstep; also sent as the `correlation_id` header",
    )

    @classmethod
    def topic(cls) -> str:
        """Topic this event type is published on."""
        return cls.TOPIC

    def key(self) -> str:
        """Kafka message key: the aggregate id, so one aggregate's events stay in order."""
        return str(getattr(self, self.KEY_FIELD))

    def headers(self) -> dict[str, str]:
        """Kafka headers every message carries."""
        return {"event_type": self.event_type, "correlation_id": self.correlation_id}

    def to_bytes(self) -> bytes:
        """The message value: one JSON object."""
        return self.model_dump_json().encode()
