-- checkout: how many units of each product catalog has reserved that checkout has heard of (its StockReserved
-- applied), and catalog's own count in the copy of the product (ProductUpdated.units_reserved_total, contract
-- 1.3.0). The orders catalog has not answered yet are taken off the copy of the stock at the POST; the difference
-- of the two counts tells which of them the copy already counts (reserved at catalog, not heard of here yet), so a
-- unit no longer counts twice while catalog's ProductUpdated overtakes its StockReserved
-- (repository.get_product_and_tweet). Each order counts once (reservation_heard), whatever comes again; the count
-- starts from the orders already marked reserved.
ALTER TABLE products ADD COLUMN units_reserved_total BIGINT;
ALTER TABLE orders ADD COLUMN reservation_heard BOOLEAN NOT NULL DEFAULT false;
UPDATE orders SET reservation_heard = true WHERE stock_reserved;
CREATE TABLE product_reservations_heard (
    product_id UUID PRIMARY KEY,
    units      BIGINT NOT NULL CHECK (units >= 0)
);
INSERT INTO product_reservations_heard (product_id, units)
SELECT product_id, sum(quantity) FROM orders WHERE stock_reserved GROUP BY product_id;
