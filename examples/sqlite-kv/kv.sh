#!/bin/sh
# A key-value store in SQLite as a raptiformica state machine (see README.md beside it).
#   kv.sh apply      one entry on stdin: `set KEY VALUE...` or `delete KEY`
#   kv.sh apply_batch  every entry file in $RAPTIFORMICA_STATE_ENTRIES (named by its index),
#                    in one sqlite3 process and one transaction: all of them or none
#   kv.sh snapshot   the whole database as SQL on stdout
#   kv.sh restore    a snapshot on stdin replaces the database
# Keys and values reach SQLite as hex blob literals, never as SQL text: no quoting to get
# wrong, whatever an entry holds. The `applied` table records every entry in the order this
# node applied it (RAPTIFORMICA_STATE_INDEX), so nodes can be compared, and an index it has
# already (redelivered after an agent restart) is skipped in the same transaction.
set -eu
db=${RAPTIFORMICA_KV_DB:-/var/lib/raptiformica-kv/kv.db}
mkdir -p "$(dirname "$db")"
hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
text() { printf "CAST(X'%s' AS TEXT)" "$(hex "$1")"; }
schema="CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, idx INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (idx INTEGER PRIMARY KEY, op TEXT NOT NULL, key TEXT NOT NULL);"
case "${1:-}" in
apply)
    idx=${RAPTIFORMICA_STATE_INDEX:?the agent sets RAPTIFORMICA_STATE_INDEX}
    case "$idx" in *[!0-9]*|'') echo "kv: bad index $idx" >&2; exit 1 ;; esac
    entry=$(cat)
    op=${entry%% *}
    rest=${entry#"$op"}; rest=${rest# }
    key=${rest%% *}
    value=${rest#"$key"}; value=${value# }
    [ -n "$key" ] || { echo "kv: an entry is \`set KEY VALUE\` or \`delete KEY\`, not: $entry" >&2; exit 1; }
    # An index this database has already (a redelivery after the agent stopped mid-apply:
    # RAPTIFORMICA_STATE_REDELIVERY=1) changes nothing: the check is in the same transaction.
    new="NOT EXISTS (SELECT 1 FROM applied WHERE idx = $idx)"
    case "$op" in
    set) change="INSERT INTO kv SELECT $(text "$key"), $(text "$value"), $idx WHERE $new
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, idx = excluded.idx;" ;;
    delete) change="DELETE FROM kv WHERE key = $(text "$key") AND $new;" ;;
    *) echo "kv: unknown operation \`$op\` (set, delete)" >&2; exit 1 ;;
    esac
    sqlite3 "$db" "$schema BEGIN; $change INSERT OR IGNORE INTO applied VALUES ($idx, '$op', $(text "$key")); COMMIT;"
    ;;
apply_batch)
    dir=${RAPTIFORMICA_STATE_ENTRIES:?the agent sets RAPTIFORMICA_STATE_ENTRIES}
    # SQLite reads each file itself (readfile) and parses it as `apply` does, in a trigger that
    # runs once per entry in index order; a bad entry aborts the whole transaction. No process
    # per entry, no entry text in SQL.
    {
        printf '%s\n' "$schema" "BEGIN;" \
            "CREATE TEMP TABLE e (idx INTEGER NOT NULL, op TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL);" \
            "CREATE TEMP TRIGGER e_check BEFORE INSERT ON e WHEN NEW.op NOT IN ('set', 'delete') OR NEW.key = ''
               BEGIN SELECT RAISE(ABORT, 'kv: an entry is \`set KEY VALUE\` or \`delete KEY\`'); END;" \
            "CREATE TEMP TRIGGER e_set AFTER INSERT ON e WHEN NEW.op = 'set' BEGIN
               INSERT INTO kv VALUES (NEW.key, NEW.value, NEW.idx)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, idx = excluded.idx; END;" \
            "CREATE TEMP TRIGGER e_delete AFTER INSERT ON e WHEN NEW.op = 'delete' BEGIN
               DELETE FROM kv WHERE key = NEW.key; END;" \
            "CREATE TEMP TRIGGER e_applied AFTER INSERT ON e BEGIN
               INSERT INTO applied VALUES (NEW.idx, NEW.op, NEW.key); END;" \
            "CREATE TEMP TABLE f (idx INTEGER PRIMARY KEY, t TEXT);"
        for f in "$dir"/*; do
            idx=${f##*/}
            case "$idx" in *[!0-9]*|'') echo "kv: bad entry file $f" >&2; exit 1 ;; esac
            printf 'INSERT INTO f (idx) VALUES (%s);\n' "${idx#"${idx%%[!0]*}"}"
        done
        printf "UPDATE f SET t = rtrim(CAST(readfile(CAST(X'%s' AS TEXT) || '/' || printf('%%020d', idx)) AS TEXT), char(10));\n" \
            "$(hex "$dir")"
        printf '%s\n' "INSERT INTO e SELECT idx,
                 substr(t, 1, instr(t || ' ', ' ') - 1),
                 substr(r, 1, instr(r || ' ', ' ') - 1),
                 substr(r, instr(r || ' ', ' ') + 1)
               FROM (SELECT idx, t, substr(t, instr(t || ' ', ' ') + 1) AS r FROM f)
               WHERE idx NOT IN (SELECT idx FROM applied) ORDER BY idx;" \
            "COMMIT;"
    } | sqlite3 -bail "$db"
    ;;
snapshot)
    sqlite3 "$db" "$schema" .dump
    ;;
restore)
    tmp="$db.restore.$$"
    rm -f "$tmp"
    sqlite3 "$tmp" <&0
    mv -f "$tmp" "$db"
    ;;
get)
    sqlite3 "$db" "SELECT value FROM kv WHERE key = $(text "${2:?kv.sh get KEY}");"
    ;;
*)
    echo "usage: kv.sh apply|snapshot|restore|get KEY" >&2
    exit 2
    ;;
esac
