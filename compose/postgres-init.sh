#!/bin/sh
# docker-compose: a least-privilege role for walbus and a demo table.
set -e
psql -v ON_ERROR_STOP=1 -U postgres -d shop <<SQL
CREATE ROLE walbus LOGIN REPLICATION PASSWORD '${WALBUS_PG_PASSWORD}';
CREATE TABLE orders (id bigserial PRIMARY KEY, customer text NOT NULL,
  amount numeric(12,2), paid boolean DEFAULT false, created_at timestamptz DEFAULT now());
GRANT SELECT ON ALL TABLES IN SCHEMA public TO walbus;
CREATE PUBLICATION walbus FOR TABLES IN SCHEMA public;
SQL
