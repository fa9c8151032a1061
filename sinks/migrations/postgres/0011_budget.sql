-- A home's monthly electricity budget, set by its household on the Bill page (ui/views/bill.py).
-- One per home; amount in currency, tax included, compared with the projected month's bill.
CREATE TABLE IF NOT EXISTS budgets (
    home_id  text          PRIMARY KEY,
    amount   numeric(14,2) NOT NULL CHECK (amount >= 0),
    currency text          NOT NULL,
    set_by   text          NOT NULL,
    set_at   timestamptz   NOT NULL
);
