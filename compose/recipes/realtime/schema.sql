-- The realtime recipe's table: the orders the page shows live.
CREATE TABLE orders (
  id         bigserial PRIMARY KEY,
  customer   text NOT NULL,
  amount     numeric(12,2) NOT NULL,
  status     text NOT NULL DEFAULT 'new',
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION orders_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON orders
  FOR EACH ROW EXECUTE FUNCTION orders_touch();
