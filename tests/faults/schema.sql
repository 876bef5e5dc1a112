-- The fault suite's tables and load function (tests/faults/faults.py runs this
-- once on a fresh database).
--
-- Three published tables with the same shape: id (never reused: keys come from
-- one sequence and a deleted row stays deleted), ver (0 at insert, +1 per
-- update), op_id (a fresh value from fx_op at every insert and update, so each
-- insert/update event names the exact change it is) and payload ('ok' in
-- committed changes, 'ABORT' in changes of transactions that roll back,
-- 'SUBABORT' in rolled-back subtransactions). fx_a and fx_c have REPLICA
-- IDENTITY FULL (delete events carry the old row), fx_b the default (key only).
--
-- fx_oplog is the committed truth: one row per row change, written in the same
-- transaction as the change, so it exists exactly when the change committed.
-- It is not in the publication.
CREATE SEQUENCE fx_key;
CREATE SEQUENCE fx_op;

CREATE TABLE fx_a (id bigint PRIMARY KEY, ver int NOT NULL, op_id bigint NOT NULL,
                   payload text NOT NULL, amount numeric(12,2) DEFAULT 12.50);
ALTER TABLE fx_a REPLICA IDENTITY FULL;
CREATE TABLE fx_b (id bigint PRIMARY KEY, ver int NOT NULL, op_id bigint NOT NULL,
                   payload text NOT NULL, doc jsonb DEFAULT '{"k": [1, 2]}');
CREATE TABLE fx_c (id bigint PRIMARY KEY, ver int NOT NULL, op_id bigint NOT NULL,
                   payload text NOT NULL, tags text[] DEFAULT '{x,y}');
ALTER TABLE fx_c REPLICA IDENTITY FULL;

CREATE TABLE fx_oplog (op_id bigint PRIMARY KEY, xid xid8 NOT NULL, tbl text NOT NULL,
                       k bigint NOT NULL, op "char" NOT NULL, ver int NOT NULL);

CREATE PUBLICATION fx_pub FOR TABLE fx_a, fx_b, fx_c;

-- `n` random row changes marked `mark`, each logged in fx_oplog; then `big`
-- rows inserted by one statement.
CREATE FUNCTION fx_ops(n int, mark text, big int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  x xid8 := pg_current_xact_id();
  t text;
  c float8;
  hi bigint;
  k bigint;
BEGIN
  FOR i IN 1 .. n LOOP
    t := 'fx_' || (ARRAY['a', 'b', 'c'])[1 + floor(random() * 3)::int];
    c := random();
    SELECT last_value INTO hi FROM fx_key;
    -- Updates and deletes hit the most recent ~600 keys: most rows see
    -- several changes, from several transactions.
    k := greatest(1, hi - floor(random() * 600)::bigint);
    IF c < 0.45 THEN
      -- insert: usually one row, sometimes a multi-row statement
      EXECUTE format(
        'WITH ins AS (INSERT INTO %I (id, ver, op_id, payload) '
        '  SELECT nextval(''fx_key''), 0, nextval(''fx_op''), $1 FROM generate_series(1, $2) '
        '  RETURNING id, op_id) '
        'INSERT INTO fx_oplog SELECT op_id, $3, %L, id, ''i'', 0 FROM ins', t, t)
        USING mark, CASE WHEN c < 0.05 THEN 2 + floor(random() * 20)::int ELSE 1 END, x;
    ELSIF c < 0.87 THEN
      -- update: one row, or the next few rows in one statement
      EXECUTE format(
        'WITH up AS (UPDATE %I SET ver = ver + 1, op_id = nextval(''fx_op''), payload = $1 '
        '  WHERE id IN (SELECT id FROM %I WHERE id >= $2 ORDER BY id LIMIT $3) '
        '  RETURNING id, ver, op_id) '
        'INSERT INTO fx_oplog SELECT op_id, $4, %L, id, ''u'', ver FROM up', t, t, t)
        USING mark, k, CASE WHEN c > 0.82 THEN 5 ELSE 1 END, x;
    ELSE
      EXECUTE format(
        'WITH del AS (DELETE FROM %I WHERE id IN (SELECT id FROM %I WHERE id >= $1 ORDER BY id LIMIT 1) '
        '  RETURNING id, ver) '
        'INSERT INTO fx_oplog SELECT nextval(''fx_op''), $2, %L, id, ''d'', ver FROM del', t, t, t)
        USING k, x;
    END IF;
  END LOOP;
  IF big > 0 THEN
    t := 'fx_' || (ARRAY['a', 'b', 'c'])[1 + floor(random() * 3)::int];
    EXECUTE format(
      'WITH ins AS (INSERT INTO %I (id, ver, op_id, payload) '
      '  SELECT nextval(''fx_key''), 0, nextval(''fx_op''), $1 FROM generate_series(1, $2) '
      '  RETURNING id, op_id) '
      'INSERT INTO fx_oplog SELECT op_id, $3, %L, id, ''i'', 0 FROM ins', t, t)
      USING mark, big, x;
  END IF;
END $$;

-- One transaction of the load (faults_load calls it):
--   commit  n changes, committed
--   abort   n changes marked ABORT; the caller wraps it in BEGIN ... ROLLBACK
--   raise   n changes marked ABORT, then an exception: the transaction aborts
--   sub     changes, a subtransaction of changes marked SUBABORT rolled back
--           by an exception it catches, more changes; committed
CREATE FUNCTION fx_tx(n int, mode text, big int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF mode = 'commit' THEN
    PERFORM fx_ops(n, 'ok', big);
  ELSIF mode = 'abort' THEN
    PERFORM fx_ops(n, 'ABORT', big);
  ELSIF mode = 'raise' THEN
    PERFORM fx_ops(n, 'ABORT', big);
    RAISE EXCEPTION 'fx: deliberate abort';
  ELSIF mode = 'sub' THEN
    PERFORM fx_ops(1 + n / 2, 'ok', 0);
    BEGIN
      PERFORM fx_ops(n, 'SUBABORT', big);
      RAISE EXCEPTION 'fx: deliberate subtransaction abort';
    EXCEPTION WHEN raise_exception THEN
      NULL;
    END;
    PERFORM fx_ops(1 + n / 2, 'ok', 0);
  ELSE
    RAISE EXCEPTION 'fx_tx: unknown mode %', mode;
  END IF;
END $$;
