-- The cache recipe's tables: a single-column key and a composite one.
--
-- REPLICA IDENTITY FULL lets PostgreSQL log the old row of an update, so the
-- envelope's `before` holds the old key when an update changes the primary
-- key, and cache.py can delete the hash stored under the old key. Tables whose
-- keys never change can keep the default identity.
CREATE TABLE products (
  id         bigint PRIMARY KEY,
  name       text NOT NULL,
  price      numeric(10,2) NOT NULL,
  in_stock   boolean NOT NULL DEFAULT true,
  tags       text[],
  attributes jsonb,
  note       text
);
ALTER TABLE products REPLICA IDENTITY FULL;

CREATE TABLE stock (
  warehouse text NOT NULL,
  sku       text NOT NULL,
  qty       integer NOT NULL,
  PRIMARY KEY (warehouse, sku)
);
ALTER TABLE stock REPLICA IDENTITY FULL;
