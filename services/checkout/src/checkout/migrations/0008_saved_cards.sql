-- checkout: saved cards, the Stripe way (issue 17). One Stripe Customer per buyer account, made lazily (the first
-- time a buyer saves a card) outside any transaction: stripe_customer_attempts is counted (committed) before each
-- call that may create one, so a later attempt looks for the Customer an interrupted one made (metadata.buyer_id)
-- before making another. Card numbers never come here: only Stripe's ids.
ALTER TABLE buyers ADD COLUMN stripe_customer_id TEXT UNIQUE
    CHECK (stripe_customer_id ~ '^cus_[A-Za-z0-9_]{1,200}$');
ALTER TABLE buyers ADD COLUMN stripe_customer_attempts INT NOT NULL DEFAULT 0 CHECK (stripe_customer_attempts >= 0);

-- The Customer an order's PaymentIntent is made for (NULL: none, as before saved cards): set when the order pays
-- with a card saved on the buyer's Customer, or asks to save the card it pays with (save_card).
ALTER TABLE orders ADD COLUMN payment_customer TEXT CHECK (payment_customer ~ '^cus_[A-Za-z0-9_]{1,200}$');
ALTER TABLE orders ADD COLUMN save_card BOOLEAN NOT NULL DEFAULT false;
