#!/usr/bin/env bash
# The audit recipe in five minutes: PostgreSQL + nats-server (JetStream) on
# loopback, the AUDIT stream created with retention limits, walbus streaming
# public.accounts into it, a few changes made by different users, and
# audit.py answering "who changed account 1, when, from what to what".
set -euo pipefail
# shellcheck source=compose/recipes/lib.sh
source "$(dirname "$0")/../lib.sh"
recipe_init audit

recipe_pg
export WALBUS_NATS_DIR=$recipe_work/nats WALBUS_NATS_HTTP_PORT=$((RECIPE_NATS_PORT + 1))
compose_nats=$recipe_root/compose/nats.sh
"$compose_nats" reset "$RECIPE_NATS_PORT" >/dev/null 2>&1 || true
NATS_URL=$("$compose_nats" start "$RECIPE_NATS_PORT")
export NATS_URL
recipe_stops+=("WALBUS_NATS_DIR='$WALBUS_NATS_DIR' '$compose_nats' stop $RECIPE_NATS_PORT")

echo "== the stream: file storage, kept 365 days or 10 GiB, whichever comes first"
python3 "$recipe_dir/audit.py" create-stream --url "$NATS_URL" --stream AUDIT \
  --subjects 'audit.shop.>' --subjects 'shop._message.>' --max-age 365d --max-bytes 10GiB

echo "== walbus"
recipe_walbus

echo "== changes by alice (application 'billing') and bob (application 'support')"
psql "$PG_ADMIN" -q <<'SQL'
CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN;
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO alice, bob;
SQL
pg=${SHOP_DSN/user=postgres/}
psql "$pg user=alice application_name=billing" -qc \
  "INSERT INTO accounts (id, owner, email, balance) VALUES (1, 'Ada', 'ada@example.com', 10), (2, 'Bo', NULL, 5)"
psql "$pg user=bob application_name=support" -qc \
  "UPDATE accounts SET email = 'ada@new.example', balance = 12.50 WHERE id = 1"
psql "$pg user=alice application_name=billing" -q <<'SQL'
BEGIN;
SET LOCAL audit.actor = 'carol@example.com';   -- the web application's own user
UPDATE accounts SET status = 'frozen' WHERE id = 1;
COMMIT;
SQL
psql "$pg user=bob application_name=support" -qc "DELETE FROM accounts WHERE id = 1"
sleep 1

echo "== audit.py who-changed --table public.accounts --key id=1"
python3 "$recipe_dir/audit.py" who-changed --url "$NATS_URL" --stream AUDIT \
  --subject-prefix audit.shop --table public.accounts --key id=1
recipe_wait
