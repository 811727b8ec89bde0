-- Retention: how far each shipment's location history has been thinned (every whole window before it).
ALTER TABLE shipments ADD COLUMN history_thinned_until TIMESTAMPTZ;
