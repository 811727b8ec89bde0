"""HTTP request and response bodies of tracking."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .domain import Eta, Point, Shipment, ShipmentStatus


class LocationIn(BaseModel):
    """One GPS fix from the courier app."""

    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90, allow_inf_nan=False, description="Latitude, WGS 84 degrees")
    lon: float = Field(ge=-180, le=180, allow_inf_nan=False, description="Longitude, WGS 84 degrees")
    recorded_at: datetime = Field(
        description="When the fix was taken, ISO-8601 with a timezone; at most 5 minutes ahead, at most 7 days old"
    )
    speed: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False, description="m/s")
    heading: float | None = Field(default=None, ge=0, lt=360, allow_inf_nan=False, description="degrees from north")
    accuracy: float | None = Field(default=None, ge=0, le=100_000, allow_inf_nan=False, description="metres")

    def to_point(self) -> Point:
        return Point(self.lat, self.lon, self.recorded_at, self.speed, self.heading, self.accuracy)


class LocationBatchIn(BaseModel):
    """A batch of fixes: `{"points": [...]}`, or the bare JSON array of points."""

    model_config = ConfigDict(extra="forbid")

    points: list[LocationIn] = Field(description="1 to 500 points, in any order (older ones are kept as history)")

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_array(cls, data: Any) -> Any:
        # Couriers may post the array itself; both spellings mean the same batch.
        return {"points": data} if isinstance(data, list) else data


class DestinationOut(BaseModel):
    city: str
    country: str
    lat: float
    lon: float


class LocationOut(BaseModel):
    lat: float
    lon: float
    recorded_at: datetime
    speed: float | None = None
    heading: float | None = None
    accuracy: float | None = None


class EtaOut(BaseModel):
    """An estimate, not a promise."""

    estimated_arrival: datetime
    remaining_m: float = Field(description="Great-circle distance left to the destination, metres")
    speed_mps: float = Field(description="Speed the estimate assumes")
    speed_source: Literal["recent", "fallback"] = Field(
        description="`recent`: the courier's recent average; `fallback`: a typical courier speed"
    )
    is_estimate: Literal[True] = True


class ShipmentOut(BaseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    status: ShipmentStatus
    last_location: LocationOut | None = Field(description="The newest fix; null before the first one")
    eta: EtaOut | None = Field(description="Estimated arrival; null before the first fix and once closed")
    destination: DestinationOut
    delivered_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, s: Shipment, eta: Eta | None) -> ShipmentOut:
        last = s.last_location
        return cls(
            id=s.id,
            order_id=s.order_id,
            status=s.status,
            last_location=(
                LocationOut(
                    lat=last.lat,
                    lon=last.lon,
                    recorded_at=last.recorded_at,
                    speed=last.speed,
                    heading=last.heading,
                    accuracy=last.accuracy,
                )
                if last
                else None
            ),
            eta=(
                EtaOut(
                    estimated_arrival=eta.estimated_arrival,
                    remaining_m=round(eta.remaining_m, 1),
                    speed_mps=round(eta.speed_mps, 2),
                    speed_source=eta.speed_source,
                )
                if eta
                else None
            ),
            destination=DestinationOut(
                city=s.destination.city, country=s.destination.country, lat=s.destination.lat, lon=s.destination.lon
            ),
            delivered_at=s.delivered_at,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )


class IngestOut(BaseModel):
    accepted: int = Field(description="Points stored by this request")
    duplicates: int = Field(description="Points already stored by an earlier (retried) request")
    shipment: ShipmentOut


class CourierTokenOut(BaseModel):
    shipment_id: uuid.UUID
    courier_token: str = Field(description="Shown once: the courier sends it as `Authorization: Bearer <token>`")


class RoutePointOut(BaseModel):
    lat: float
    lon: float
    recorded_at: datetime


class RouteOut(BaseModel):
    """The route so far, oldest point first."""

    shipment_id: uuid.UUID
    points: list[RoutePointOut]
    truncated: bool = Field(description="True when older points exist than the ones listed (only the newest are sent)")

    @classmethod
    def of(cls, shipment_id: uuid.UUID, points: list[Point], limit: int) -> RouteOut:
        """``points`` may hold one more than ``limit``: then the oldest is dropped and the route is truncated."""
        truncated = len(points) > limit
        kept = points[len(points) - limit :] if truncated else points
        return cls(
            shipment_id=shipment_id,
            points=[RoutePointOut(lat=p.lat, lon=p.lon, recorded_at=p.recorded_at) for p in kept],
            truncated=truncated,
        )
