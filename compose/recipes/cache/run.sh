#!/usr/bin/env bash
# The cache recipe in five minutes: PostgreSQL + Redis on loopback, walbus
# appending changes of products and stock to Redis Streams, cache.py applying
# them to one hash per row, some changes, and the hashes shown next to the
# tables.
set -euo pipefail
# shellcheck source=compose/recipes/lib.sh
source "$(dirname "$0")/../lib.sh"
recipe_init cache

recipe_pg
export WALBUS_REDIS_DIR=$recipe_work/redis
compose_redis=$recipe_root/compose/redis.sh
REDIS_URL=$("$compose_redis" start "$RECIPE_REDIS_PORT")
export REDIS_URL
recipe_stops+=("WALBUS_REDIS_DIR='$WALBUS_REDIS_DIR' '$compose_redis' stop $RECIPE_REDIS_PORT")
redis-cli -p "$RECIPE_REDIS_PORT" FLUSHALL >/dev/null

echo "== walbus"
recipe_walbus
echo "== cache.py (consumer group 'cache')"
recipe_bg python3 "$recipe_dir/cache.py" --redis "$REDIS_URL" \
  --streams shop.public.products,shop.public.stock --group cache --consumer cache-1

echo "== changes"
psql "$SHOP_DSN" -q <<'SQL'
INSERT INTO products (id, name, price, tags, attributes) VALUES
  (1, 'Green tea', 4.50, '{tea,organic}', '{"origin": "Shizuoka", "grams": 100}'),
  (2, 'Teapot', 29.00, '{kitchen}', NULL),
  (3, 'Mug', 8.00, NULL, NULL);
INSERT INTO stock VALUES ('berlin', 'tea', 40), ('berlin', 'teapot', 3), ('lyon', 'tea', 12);
UPDATE products SET price = 4.20, note = 'spring offer' WHERE id = 1;
UPDATE products SET id = 20 WHERE id = 2;          -- a key change: hash 2 goes, hash 20 comes
DELETE FROM products WHERE id = 3;
UPDATE stock SET qty = qty - 1 WHERE warehouse = 'berlin' AND sku = 'teapot';
DELETE FROM stock WHERE warehouse = 'lyon';
SQL
sleep 1.5

echo "== the hashes (redis-cli -p $RECIPE_REDIS_PORT --scan --pattern 'public.*'; HGETALL each)"
for k in $(redis-cli -p "$RECIPE_REDIS_PORT" --scan --pattern 'public.*' | sort); do
  printf '%s  ' "$k"
  redis-cli -p "$RECIPE_REDIS_PORT" --no-raw HGETALL "$k" | paste -sd' ' -
done
echo "== the tables"
psql "$SHOP_DSN" -c "TABLE products" -c "TABLE stock"
echo "== consumer group (XINFO GROUPS shop.public.products)"
redis-cli -p "$RECIPE_REDIS_PORT" XINFO GROUPS shop.public.products | paste -sd' ' -
recipe_wait
