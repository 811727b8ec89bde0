-- checkout: the payment worker's claim (repository.claim_due_payments) walks the orders that wait for a payment,
-- in the order they fall due. orders_payment_due indexed every order with a payment_due_at, paid ones included
-- (a webhook may end an order while its lease is still set), and the planner, finding no index that holds only
-- the waiting orders in due order, combined two bitmaps and sorted them. Under load both bitmaps carried every
-- order placed since the last vacuum (dead index entries: a bitmap scan never marks them dead), so each claim read
-- ~150 buffers at 120 orders/s (bench/README.md, stop 32). This index holds only the waiting orders, ordered by
-- when they fall due; it replaces orders_payment_due, which only the claim used.
CREATE INDEX orders_payment_due_unpaid ON orders (payment_due_at) WHERE status IN ('pending', 'requires_action');
DROP INDEX orders_payment_due;
