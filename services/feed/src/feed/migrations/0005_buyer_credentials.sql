-- feed: buyer accounts' credential verifiers (SHA-256), from checkout.buyers.v1 (issue 17). A buyer account's
-- follows and followed timeline need its credential (Bearer tsb_...): feed checks it against these hashes and
-- never sees a credential it did not receive in a request.
--
-- Every row is a tombstone-friendly fact about one hash, so the events may arrive in any order (an at-least-once
-- re-publish, a dead letter redriven later) and end in the same state: BuyerCredentialIssued inserts a live row
-- unless the hash is known already; BuyerCredentialsRevoked sets revoked (creating the row if its issue has not
-- arrived yet), and nothing sets it back. BuyerDeleted records the buyer in deleted_buyers (an issue read later is
-- ignored), and removes its rows here and its follows.
CREATE TABLE buyer_credentials (
    credential_sha256 TEXT PRIMARY KEY CHECK (credential_sha256 ~ '^[0-9a-f]{64}$'),
    buyer_id          TEXT NOT NULL CHECK (buyer_id ~ '^ba_[0-9a-f]{32}$'),
    revoked           BOOLEAN NOT NULL DEFAULT false,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX buyer_credentials_by_buyer ON buyer_credentials (buyer_id);

-- Buyers who deleted their account: only the opaque id (no personal data), kept so that a replayed issue of one
-- of its credentials never brings the buyer back.
CREATE TABLE deleted_buyers (
    buyer_id   TEXT PRIMARY KEY CHECK (buyer_id ~ '^ba_[0-9a-f]{32}$'),
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
