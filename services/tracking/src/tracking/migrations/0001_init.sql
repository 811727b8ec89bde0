-- tracking: one shipment per paid order, and the courier's location history.

CREATE TABLE shipments (
    id                 UUID PRIMARY KEY,
    -- One shipment per order: a duplicate or replayed OrderPaid creates nothing.
    order_id           UUID NOT NULL UNIQUE,
    status             TEXT NOT NULL CHECK (status IN ('label_created', 'picked_up', 'in_transit',
                                                       'out_for_delivery', 'delivered', 'exception', 'cancelled')),
    dest_city          TEXT NOT NULL,
    dest_country       CHAR(2) NOT NULL,
    dest_lat           DOUBLE PRECISION NOT NULL CHECK (dest_lat BETWEEN -90 AND 90),
    dest_lon           DOUBLE PRECISION NOT NULL CHECK (dest_lon BETWEEN -180 AND 180),
    -- Carried by every event of this shipment, so one purchase is followed from tweet to doorstep.
    correlation_id     TEXT NOT NULL,
    -- Only the hash of the courier's bearer token is kept.
    courier_token_hash TEXT NOT NULL,
    -- The newest point (by recorded_at), denormalised so reads never scan the history.
    last_lat           DOUBLE PRECISION,
    last_lon           DOUBLE PRECISION,
    last_recorded_at   TIMESTAMPTZ,
    last_speed         DOUBLE PRECISION,
    last_heading       DOUBLE PRECISION,
    last_accuracy      DOUBLE PRECISION,
    recent_speed_mps   DOUBLE PRECISION,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at       TIMESTAMPTZ,
    CHECK ((last_lat IS NULL) = (last_recorded_at IS NULL) AND (last_lon IS NULL) = (last_recorded_at IS NULL))
);
CREATE INDEX shipments_by_status ON shipments (status);

-- Every point a courier sent. The key makes a retried batch a no-op instead of a second copy.
CREATE TABLE shipment_locations (
    shipment_id UUID NOT NULL REFERENCES shipments (id),
    recorded_at TIMESTAMPTZ NOT NULL,
    lat         DOUBLE PRECISION NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon         DOUBLE PRECISION NOT NULL CHECK (lon BETWEEN -180 AND 180),
    speed       DOUBLE PRECISION,
    heading     DOUBLE PRECISION,
    accuracy    DOUBLE PRECISION,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (shipment_id, recorded_at)
);
