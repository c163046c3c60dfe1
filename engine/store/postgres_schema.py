"""The PostgreSQL schema: table definitions and the binary COPY column types.

`PostgresStore.migrate()` applies each version once per schema. Version 1 creates the
tables, choosing the telemetry layout (hypertable, daily partitions or a plain table) when
it creates that table; version 2 makes duplicates exact and deliveries claimable (below);
version 3 seals webhook secrets stored in plaintext (secret_box.py); version 4 adds the
consumers' durable state (`CONSUMER_STATE_DDL`); version 5 the per-device tokens of the
HTTP inputs (`DEVICE_TOKENS_DDL`); version 6 the operator console's tables and alert cases,
version 7 the index of tracks (`console_schema.py`).
"""

from engine.store.rows import TELEMETRY_COLUMNS

TELEMETRY_TYPES = [
    "text",  # device_id
    "text",  # stream
    "int8",  # ts_ms
    "float8",  # lat
    "float8",  # lon
    "float8",  # speed_kmh
    "float8",  # heading_deg
    "float8",  # hdop
    "int8",  # sats
    "bool",  # ignition
    "float8",  # odometer_km
    "int8",  # seq
    "float8",  # accuracy_m
    "float8",  # g
    "int8",  # duration_ms
    "bool",  # ext_power
    "float8",  # battery_v
    "bool",  # tamper
    "text",  # vin
]
REJECT_TYPES = ["text", "text", "text", "text", "int4", "bytea", "int8"]

# The decoder admits any finite double and any integer up to 2**63 - 1 (devices/decode.py),
# so the columns are double precision and bigint: a narrower type would fail a whole batch
# on one odd reading, forever.
TELEMETRY_DDL = """CREATE TABLE telemetry (
    device_id text NOT NULL,
    stream text NOT NULL,
    ts_ms bigint NOT NULL,
    lat double precision, lon double precision, speed_kmh double precision,
    heading_deg double precision, hdop double precision, sats bigint, ignition boolean,
    odometer_km double precision, seq bigint, accuracy_m double precision,
    g double precision, duration_ms bigint, ext_power boolean, battery_v double precision,
    tamper boolean, vin text)"""

# Ids compare in "C" collation: the same order as SQLite, whatever the database's locale.
DDL_V1: tuple[str, ...] = (
    """CREATE TABLE fences (
        id text COLLATE "C" PRIMARY KEY,
        kind text NOT NULL,
        feature json NOT NULL,
        updated_ms bigint NOT NULL)""",
    """CREATE TABLE loans (
        id text COLLATE "C" PRIMARY KEY,
        vin text NOT NULL,
        status text NOT NULL,
        doc json NOT NULL,
        updated_ms bigint NOT NULL)""",
    "CREATE INDEX loans_vin ON loans (vin)",
    """CREATE TABLE webhooks (
        id text COLLATE "C" PRIMARY KEY,
        url text NOT NULL,
        secret text NOT NULL,
        types json)""",
    # `json`, not `jsonb`: it keeps the §4 key order and accepts any valid JSON text.
    """CREATE TABLE alerts (
        id text COLLATE "C" PRIMARY KEY,
        type text NOT NULL,
        ts_ms bigint NOT NULL,
        detected_ms bigint NOT NULL,
        device_id text,
        loan_id text,
        fence_id text,
        body json NOT NULL,
        acked_ms bigint,
        ack_note text)""",
    "CREATE INDEX alerts_ts ON alerts (ts_ms, id)",
    "CREATE INDEX alerts_type_ts ON alerts (type, ts_ms, id)",
    "CREATE INDEX alerts_loan_ts ON alerts (loan_id, ts_ms, id)",
    "CREATE INDEX alerts_device_ts ON alerts (device_id, ts_ms, id)",
    """CREATE TABLE deliveries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hook_id text COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        alert_id text COLLATE "C" NOT NULL REFERENCES alerts (id),
        alert_type text NOT NULL,
        order_key text NOT NULL,
        body bytea NOT NULL,
        state text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts integer NOT NULL,
        created_ms bigint NOT NULL,
        next_at_ms bigint NOT NULL,
        last_error text,
        last_status integer)""",
    # The head of each (hook, order_key) queue is the first entry of its group here.
    "CREATE INDEX deliveries_queue ON deliveries (hook_id, order_key, id) WHERE state = 'pending'",
    "CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead'",
    "CREATE INDEX deliveries_hook ON deliveries (hook_id)",
    """CREATE TABLE dead_letters (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        topic text NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL,
        device_id text,
        array_index integer,
        raw bytea NOT NULL,
        received_ms bigint NOT NULL)""",
    """CREATE TABLE device_state (
        id text COLLATE "C" PRIMARY KEY,
        doc json NOT NULL,
        updated_ms bigint NOT NULL)""",
    """CREATE TABLE loan_state (
        id text COLLATE "C" PRIMARY KEY,
        doc json NOT NULL,
        updated_ms bigint NOT NULL)""",
)

# Version 2. Telemetry gets its unique key (a reading stored twice is a reading counted
# twice): rows of a key stored more than once are replaced by one of them first (by key,
# not by ctid, which compressed TimescaleDB chunks do not have). The key starts with ts_ms,
# as PostgreSQL requires of a partitioned table's unique index and because rows mostly
# arrive in time order and append to the index (measured: binary COPY keeps ~85-90% of its
# rate with this key, ~60% with device_id first). Deliveries get the claim column of
# `due_deliveries(claim_ms=...)`.
_KEY = "ts_ms, device_id, stream"
_ALL = ", ".join(TELEMETRY_COLUMNS)
_DEDUP_COPY = (
    "CREATE TEMP TABLE pledgewatch_dedup ON COMMIT DROP AS "  # noqa: S608  # constants
    f"SELECT DISTINCT ON ({_KEY}) {_ALL} FROM telemetry "
    f"WHERE ({_KEY}) IN (SELECT {_KEY} FROM telemetry GROUP BY {_KEY} HAVING count(*) > 1) "
    f"ORDER BY {_KEY}"
)
_DEDUP_DELETE = (
    "DELETE FROM telemetry t USING pledgewatch_dedup d "
    "WHERE t.ts_ms = d.ts_ms AND t.device_id = d.device_id AND t.stream = d.stream"
)
_DEDUP_INSERT = f"INSERT INTO telemetry ({_ALL}) SELECT {_ALL} FROM pledgewatch_dedup"  # noqa: S608
DEDUPLICATE_TELEMETRY = (_DEDUP_COPY, _DEDUP_DELETE, _DEDUP_INSERT)
TELEMETRY_KEY = (
    "CREATE UNIQUE INDEX IF NOT EXISTS telemetry_key ON telemetry (ts_ms, device_id, stream)"
)
DELIVERY_CLAIMS = (
    "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS claimed_until_ms bigint NOT NULL DEFAULT 0"
)

# Version 4. Consumers' durable state (DESIGN §8): one JSON document per (consumer, key),
# written in the transaction of the batch that fed the consumer. Keys in "C" collation, as
# ids are: `load_consumer_rows` orders them as SQLite does.
CONSUMER_STATE_DDL = """CREATE TABLE IF NOT EXISTS consumer_state (
    consumer text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    doc json NOT NULL,
    updated_ms bigint NOT NULL,
    PRIMARY KEY (consumer, key))"""

# Version 5. Per-device tokens of the HTTP inputs (DESIGN §9): only each token's SHA-256
# (hex), looked up by that hash on every request that presents one.
DEVICE_TOKENS_DDL = (
    """CREATE TABLE IF NOT EXISTS device_tokens (
    device_id text COLLATE "C" PRIMARY KEY,
    token_sha256 text NOT NULL,
    created_ms bigint NOT NULL)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS device_tokens_hash ON device_tokens (token_sha256)",
)
