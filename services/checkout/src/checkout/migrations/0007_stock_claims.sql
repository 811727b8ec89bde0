-- checkout: the orders placed here that catalog has not answered yet, per product (repository.get_product_and_tweet
-- takes them off checkout's copy of the stock, so a drop's sold-out answer comes from the POST). Only those orders
-- are indexed: a few per product at a time, a few hundred in a drop.
CREATE INDEX orders_awaiting_stock ON orders (product_id) WHERE status = 'pending' AND NOT stock_reserved;
