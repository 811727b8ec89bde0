-- checkout: which cards are saved on a buyer's Customer, to refuse them to an order without that buyer's credential
-- (usecases.orders.check_purchase). Every saved card was first paid with by an order that named the Customer
-- (payment_customer), so those orders are the list; most orders name none, so the index is small.
CREATE INDEX orders_by_saved_card ON orders (payment_method) WHERE payment_customer IS NOT NULL;
