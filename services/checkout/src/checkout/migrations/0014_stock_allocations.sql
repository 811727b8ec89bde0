-- checkout: units of each product catalog allocated to it (catalog.allocations.v1, contract 1.4.0). Placing an order
-- takes its units from here in the order's own transaction when there are enough: the order is reserved and due for
-- payment at once, with no round trip to catalog (which records it from OrderPlaced.allocation_generation). A higher
-- generation replaces the allocation (catalog took it back: the stock was set below it); the same one adds to it.
CREATE TABLE stock_allocations (
    product_id UUID PRIMARY KEY,
    generation INT NOT NULL CHECK (generation >= 0),
    units_left INT NOT NULL CHECK (units_left >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
ALTER TABLE orders ADD COLUMN allocation_generation INT;
-- Orders reserved here that catalog's count does not show yet (repository.get_product_and_tweet).
CREATE INDEX orders_allocated_unheard ON orders (product_id)
    WHERE allocation_generation IS NOT NULL AND NOT reservation_heard;
