-- checkout: a buyer can delete the account (issue 17). The buyer's row goes (its credentials and link code with
-- it, ON DELETE CASCADE); its orders stay for the merchant's records with the buyer's personal data removed
-- (usecases/account_deletion.py says what is kept): buyer_erased_at says when, and that the blanks are erasure,
-- not missing data.
ALTER TABLE orders ADD COLUMN buyer_erased_at TIMESTAMPTZ;
