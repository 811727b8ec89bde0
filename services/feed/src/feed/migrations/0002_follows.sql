-- feed: buyers follow merchants; a buyer's timeline shows the tweets of the merchants it follows.

-- buyer_id is the buyer's opaque id (the same one checkout receives in an order), not a row of ours.
-- No foreign key to merchants: the read model may not have the merchant yet when a follow is replayed.
CREATE TABLE follows (
    buyer_id    TEXT        NOT NULL CHECK (char_length(buyer_id) BETWEEN 1 AND 200),
    merchant_id UUID        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (buyer_id, merchant_id)
);
-- A merchant's followers (counts, and a later fan-out by merchant).
CREATE INDEX follows_by_merchant ON follows (merchant_id);
