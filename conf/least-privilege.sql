-- walbus with least privilege: a login role that can only stream changes of
-- the published tables and read those tables (for snapshot = "initial"),
-- and a publication owned by a separate admin role, so walbus itself can
-- neither change what is published nor read anything else.
--
-- Run it as a superuser (or the tables' owner with CREATEROLE), in the
-- database walbus streams from, with psql:
--
--   psql -d shop -v ON_ERROR_STOP=1 \
--        -v walbus_role=walbus -v walbus_password="$WALBUS_PG_PASSWORD" \
--        -v admin_role=walbus_admin -v publication=walbus \
--        -v tables='public.orders, public.customers' \
--        -f conf/least-privilege.sql
--
-- Variables (all but walbus_password and tables have the defaults shown):
--   walbus_role      the role walbus logs in as                 (walbus)
--   walbus_password  its password (SCRAM-hashed by the server; omit the -v
--                    to keep the current one, e.g. for certificate login)
--   admin_role       owns the publication; NOLOGIN              (walbus_admin)
--   publication      the publication's name                     (walbus)
--   tables           comma-separated schema-qualified tables to publish
--
-- walbus keeps its own state (initial snapshot progress, backfill requests)
-- in schema walbus; the script creates it owned by walbus_role.
--
-- Then configure walbus with that role and
--   [source]  publication = "<publication>"   create_publication = false
-- (the role may create its replication slot: create_slot = true works).
-- On RDS/Aurora use GRANT rds_replication TO <walbus_role> instead of the
-- REPLICATION attribute (ALTER ROLE ... REPLICATION is refused there).
-- Running the script again is safe: it converges to the same state, and
-- the publication's table list becomes exactly `tables`.

\set ON_ERROR_STOP on
\if :{?walbus_role}
\else
  \set walbus_role walbus
\endif
\if :{?admin_role}
\else
  \set admin_role walbus_admin
\endif
\if :{?publication}
\else
  \set publication walbus
\endif
\if :{?tables}
\else
  \echo 'least-privilege.sql: set -v tables=''schema.table, ...'' (the tables to publish)'
  SELECT 1/0 AS missing_tables_variable;
\endif

BEGIN;

-- The walbus login role: LOGIN and REPLICATION, nothing else.
SELECT format('CREATE ROLE %I', :'walbus_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'walbus_role') \gexec
ALTER ROLE :"walbus_role" LOGIN REPLICATION
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
\if :{?walbus_password}
ALTER ROLE :"walbus_role" PASSWORD :'walbus_password';
\endif

-- The admin role owns the publication; nobody logs in as it.
SELECT format('CREATE ROLE %I NOLOGIN', :'admin_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'admin_role') \gexec
-- A publication's owner needs CREATE on the database.
SELECT format('GRANT CREATE ON DATABASE %I TO %I', current_database(), :'admin_role') \gexec

-- The publication: exactly the listed tables.
SELECT format('CREATE PUBLICATION %I FOR TABLE %s', :'publication', :'tables')
 WHERE NOT EXISTS (SELECT FROM pg_publication WHERE pubname = :'publication') \gexec
SELECT format('ALTER PUBLICATION %I SET TABLE %s', :'publication', :'tables') \gexec
ALTER PUBLICATION :"publication" OWNER TO :"admin_role";

-- What walbus reads: the database, the schemas of the tables, the tables.
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'walbus_role') \gexec
SELECT DISTINCT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, :'walbus_role')
  FROM unnest(string_to_array(:'tables', ',')) AS t(name)
  JOIN pg_class c ON c.oid = trim(t.name)::regclass
  JOIN pg_namespace n ON n.oid = c.relnamespace \gexec
SELECT format('GRANT SELECT ON TABLE %s TO %I', :'tables', :'walbus_role') \gexec

-- walbus's own bookkeeping (initial snapshot progress, backfill requests)
-- lives in schema walbus, which it owns, so it needs no CREATE on the database.
SELECT format('CREATE SCHEMA walbus AUTHORIZATION %I', :'walbus_role')
 WHERE NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'walbus') \gexec

COMMIT;

-- What was set up, for the record.
SELECT r.rolname AS role, r.rolcanlogin AS login, r.rolreplication AS replication,
       r.rolsuper AS superuser
  FROM pg_roles r WHERE r.rolname IN (:'walbus_role', :'admin_role') ORDER BY 1;
SELECT p.pubname AS publication, pg_get_userbyid(p.pubowner) AS owner,
       string_agg(t.schemaname || '.' || t.tablename, ', ' ORDER BY 1) AS tables
  FROM pg_publication p JOIN pg_publication_tables t USING (pubname)
 WHERE p.pubname = :'publication' GROUP BY 1, 2;
