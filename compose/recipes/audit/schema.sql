-- The audit recipe's table, and what makes "who" answerable.
--
-- PostgreSQL does not write the user into the WAL, so a change stream alone
-- cannot say who made a change. Two small pieces put it there:
--   * a BEFORE INSERT OR UPDATE trigger stamps `changed_by` (and `changed_at`)
--     on every row it writes, so the `after` of every insert/update carries it;
--   * a DELETE leaves no new row to stamp, so an AFTER DELETE trigger (and an
--     AFTER TRUNCATE one) writes a transactional logical-decoding message
--     (prefix 'audit') naming the deleter; walbus streams it (messages = true) with the delete's
--     transaction ids, and audit.py pairs the two.
-- The actor is the application's own user when it says so
-- (`SET LOCAL audit.actor = 'alice@example.com'` in the transaction), else the
-- database role, followed by "via <application_name>" when one is set.
--
-- REPLICA IDENTITY FULL makes PostgreSQL log the whole old row, so updates and
-- deletes carry `before`: the "from what" of "from what to what".

CREATE TABLE accounts (
  id         bigint PRIMARY KEY,
  owner      text NOT NULL,
  email      text,
  balance    numeric(12,2) NOT NULL DEFAULT 0,
  status     text NOT NULL DEFAULT 'active',
  changed_by text NOT NULL DEFAULT current_user,
  changed_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE accounts REPLICA IDENTITY FULL;

-- Who is acting: the application's user if it set one, else the role.
CREATE FUNCTION audit_actor() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('audit.actor', true), ''), current_user::text)
         || coalesce(' via ' || nullif(current_setting('application_name', true), ''), '')
$$;

CREATE FUNCTION audit_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.changed_by := audit_actor();
  NEW.changed_at := clock_timestamp();
  RETURN NEW;
END $$;

-- AFTER DELETE (per row) and AFTER TRUNCATE (per statement, key null):
-- {"table": "public.accounts", "key": {"id": 42}, "by": "..."}.
-- TG_ARGV[0] names the key column.
CREATE FUNCTION audit_note_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_logical_emit_message(true, 'audit', json_build_object(
    'table', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME,
    'key', CASE WHEN TG_LEVEL = 'ROW'
                THEN jsonb_build_object(TG_ARGV[0], to_jsonb(OLD) -> TG_ARGV[0]) END,
    'by', audit_actor())::text);
  RETURN NULL;
END $$;

CREATE TRIGGER accounts_stamp BEFORE INSERT OR UPDATE ON accounts
  FOR EACH ROW EXECUTE FUNCTION audit_stamp();
CREATE TRIGGER accounts_note_delete AFTER DELETE ON accounts
  FOR EACH ROW EXECUTE FUNCTION audit_note_delete('id');
CREATE TRIGGER accounts_note_truncate AFTER TRUNCATE ON accounts
  FOR EACH STATEMENT EXECUTE FUNCTION audit_note_delete('id');
