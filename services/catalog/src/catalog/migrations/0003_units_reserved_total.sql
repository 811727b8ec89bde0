-- catalog: units ever reserved per product (never goes down), carried by every ProductUpdated. Checkout subtracts
-- the orders catalog has not answered yet from its copy of the stock; with this count it can tell a reservation its
-- copy already shows from one it has not heard of yet (before, such a unit counted twice while catalog's
-- ProductUpdated overtook the StockReserved, and a drop could end with units unsold). Existing products start from
-- their reservations so far (every reservation that was made, whatever became of it).
ALTER TABLE products ADD COLUMN units_reserved_total BIGINT NOT NULL DEFAULT 0 CHECK (units_reserved_total >= 0);
UPDATE products p
   SET units_reserved_total = r.units
  FROM (SELECT product_id, sum(quantity) AS units FROM reservations WHERE status <> 'rejected' GROUP BY product_id) r
 WHERE r.product_id = p.id;
