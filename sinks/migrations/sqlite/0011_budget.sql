-- A home's monthly electricity budget, set by its household on the Bill page (ui/views/bill.py).
-- One per home; amount in currency, tax included, compared with the projected month's bill.
CREATE TABLE IF NOT EXISTS budgets (
    home_id  TEXT    PRIMARY KEY,
    amount   TEXT    NOT NULL,  -- a decimal as text: money is never a binary fraction here
    currency TEXT    NOT NULL,
    set_by   TEXT    NOT NULL,
    set_at   INTEGER NOT NULL
) WITHOUT ROWID;
