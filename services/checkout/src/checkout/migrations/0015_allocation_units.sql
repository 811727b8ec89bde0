-- checkout: the allocation as one row per unit instead of one count per product. With one count, every order that
-- took from it held that row's lock until its transaction committed, so a drop's buyers queued on it one behind
-- the other (bench/README.md, stop 26). An order now takes its units with FOR UPDATE SKIP LOCKED: concurrent
-- orders take different units and never wait for each other. stock_allocations keeps the generation in force.
CREATE TABLE stock_allocation_units (
    id BIGSERIAL PRIMARY KEY,
    product_id UUID NOT NULL,
    generation INT NOT NULL CHECK (generation >= 0)
);
CREATE INDEX stock_allocation_units_product ON stock_allocation_units (product_id, generation);
INSERT INTO stock_allocation_units (product_id, generation)
SELECT a.product_id, a.generation FROM stock_allocations a, generate_series(1, a.units_left);
ALTER TABLE stock_allocations DROP COLUMN units_left;
