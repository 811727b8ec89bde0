-- checkout: how many orders wait for their payment at once for one buyer, one payment method, one address
-- (CheckoutSettings.unpaid_orders_cap), and the short hold of orders waiting for 3-D Secure
-- (payment_action_deadline_s). Only orders still waiting are indexed: the indexes stay small.
CREATE INDEX orders_unpaid_by_buyer ON orders (buyer_id) WHERE status IN ('pending', 'requires_action');
CREATE INDEX orders_unpaid_by_payment_method ON orders (payment_method) WHERE status IN ('pending', 'requires_action');
CREATE INDEX orders_unpaid_by_address ON orders (ship_country, lower(ship_city), lower(ship_line1))
    WHERE status IN ('pending', 'requires_action');
CREATE INDEX orders_awaiting_action ON orders (created_at) WHERE status = 'requires_action';
