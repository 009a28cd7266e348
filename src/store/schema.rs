//! Schema migrations, versioned, one list for both backends.
//!
//! Version N means the same tables and meaning on SQLite and PostgreSQL. SQLite keeps its
//! version in `PRAGMA user_version`, PostgreSQL in the table `wharf_schema`. PostgreSQL support
//! starts at version 6: its first migration creates the whole schema of that version, and the
//! earlier versions are no-ops there. Migrations run at start under a lock (SQLite: the write
//! transaction; PostgreSQL: an advisory lock, so any replica may start first and the others
//! wait), or alone with `wharf migrate`. A database whose version is newer than this binary
//! knows is refused: an older binary must not write to a schema it does not understand.

use super::StoreError;
use super::db::Db;

/// A migration step written in Rust (both backends).
pub type Step = fn(&Db<'_>) -> Result<(), StoreError>;

/// One migration: the SQL for each backend, then an optional step in Rust.
pub struct Migration {
    pub sqlite: &'static str,
    pub postgres: &'static str,
    pub then: Option<Step>,
}

/// The version this binary writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Key of PostgreSQL's advisory lock held while migrating.
pub const PG_MIGRATION_LOCK: i64 = 0x7768_6172_665f_6d67; // "wharf_mg"

/// A version that changes no table, only how rows are written (which older binaries cannot
/// read): it moves on so that they refuse the database.
const ROWS_ONLY: Migration = Migration {
    sqlite: "",
    postgres: "",
    then: None,
};

pub static MIGRATIONS: &[Migration] = &[
    // 1: event log and knowledge
    Migration {
        sqlite: r#"
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        project TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT,
        occurred_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        release_at INTEGER,
        body TEXT NOT NULL
    );
    CREATE INDEX events_by_project ON events(project, seq);
    CREATE INDEX events_held ON events(release_at) WHERE state = 'held';
    CREATE INDEX events_held_digest ON events(repository, digest) WHERE state = 'held';
    CREATE TABLE artifacts (
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL,
        media_type TEXT,
        size INTEGER,
        config_digest TEXT,
        chart TEXT,
        platforms TEXT,
        children TEXT,
        blobs TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (repository, digest)
    );
    CREATE TABLE tags (
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (repository, tag)
    );
    CREATE INDEX tags_by_digest ON tags(repository, digest);
    "#,
        postgres: "",
        then: None,
    },
    // 2: projects, webhook policies, the outbox (deliveries and their attempts), settings
    Migration {
        sqlite: r#"
    CREATE TABLE projects (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE policies (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        event_types TEXT NOT NULL,
        targets TEXT NOT NULL,
        filters TEXT NOT NULL,
        creator TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (project, name)
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        policy_id INTEGER NOT NULL,
        project TEXT NOT NULL,
        target_index INTEGER NOT NULL,
        target_address TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_status INTEGER,
        last_error TEXT
    );
    CREATE INDEX deliveries_due ON deliveries(not_before) WHERE state = 'pending';
    CREATE INDEX deliveries_by_policy ON deliveries(policy_id, id);
    CREATE INDEX deliveries_by_state ON deliveries(state);
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status_code INTEGER,
        error_kind TEXT,
        error TEXT,
        response_excerpt TEXT
    );
    CREATE INDEX attempts_by_delivery ON attempts(delivery_id, id);
    CREATE TABLE last_triggers (
        policy_id INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (policy_id, event_type)
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
        postgres: "",
        then: None,
    },
    // 3: classic (ChartMuseum) chart versions seen uploaded: type, appVersion, size
    Migration {
        sqlite: r#"
    CREATE TABLE charts (
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        type TEXT NOT NULL,
        app_version TEXT,
        size INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (project, name, version)
    );
    "#,
        postgres: "",
        then: None,
    },
    // 4: quota usage: the blobs each project's manifests reference, and warning state
    Migration {
        sqlite: r#"
    CREATE TABLE project_blobs (
        project TEXT NOT NULL,
        digest TEXT NOT NULL,
        size INTEGER NOT NULL,
        refs INTEGER NOT NULL,
        PRIMARY KEY (project, digest)
    );
    CREATE TABLE quota_state (
        project TEXT PRIMARY KEY,
        warned INTEGER NOT NULL
    );
    "#,
        postgres: "",
        then: None,
    },
    // 5: the dispatcher claims per target address (cost independent of queue length); the
    // index on state alone misled the planner into scanning every pending delivery; pruning
    // finds an event's deliveries by event id
    Migration {
        sqlite: r#"
    CREATE INDEX deliveries_pending_by_target ON deliveries(target_address, not_before, id)
        WHERE state = 'pending';
    DROP INDEX deliveries_by_state;
    CREATE INDEX deliveries_by_event ON deliveries(event_id);
    "#,
        postgres: "",
        then: None,
    },
    // 6: several replicas. Claims carry a token and a lease (a replica that dies mid-attempt
    // loses its deliveries to another when the lease expires); each target version is stored
    // once (no copy of auth headers and secrets per delivery); a project's quota usage is one
    // row, locked by pushes that reserve space before the registry sees them; the short-lived
    // memory of what a client just resolved is shared (tag attribution across replicas);
    // `meta` holds the policy version every replica watches. PostgreSQL starts here.
    Migration {
        sqlite: r#"
    ALTER TABLE deliveries ADD COLUMN claim_token INTEGER;
    ALTER TABLE deliveries ADD COLUMN lease_until INTEGER;
    ALTER TABLE deliveries ADD COLUMN target_id INTEGER;
    CREATE INDEX deliveries_lease ON deliveries(lease_until) WHERE state = 'running';
    CREATE TABLE delivery_targets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        policy_id INTEGER NOT NULL,
        position INTEGER NOT NULL,
        address TEXT NOT NULL,
        body TEXT NOT NULL,
        current INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX delivery_targets_by_policy ON delivery_targets(policy_id, position);
    INSERT INTO delivery_targets (policy_id, position, address, body, current, created_at)
        SELECT DISTINCT policy_id, target_index, target_address, target, 0, 0 FROM deliveries
        WHERE state IN ('pending', 'running', 'dead') AND target != '';
    UPDATE deliveries SET target_id = (SELECT t.id FROM delivery_targets t
        WHERE t.policy_id = deliveries.policy_id AND t.position = deliveries.target_index
          AND t.body = deliveries.target)
        WHERE target != '';
    UPDATE deliveries SET target = '';
    CREATE INDEX deliveries_by_target ON deliveries(target_id) WHERE state IN ('pending', 'running');
    CREATE TABLE quota_projects (
        project TEXT PRIMARY KEY,
        usage INTEGER NOT NULL DEFAULT 0,
        warned INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO quota_projects (project, usage, warned)
        SELECT project, CAST(MIN(TOTAL(size), 9.0e18) AS INTEGER), 0 FROM project_blobs
        WHERE refs > 0 GROUP BY project;
    INSERT INTO quota_projects (project, usage, warned)
        SELECT project, 0, 0 FROM quota_state WHERE project NOT IN (SELECT project FROM quota_projects);
    UPDATE quota_projects SET warned = COALESCE(
        (SELECT s.warned FROM quota_state s WHERE s.project = quota_projects.project), 0);
    DROP TABLE quota_state;
    CREATE TABLE quota_reservations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        project TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        blobs TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX quota_reservations_by_project ON quota_reservations(project, expires_at);
    CREATE TABLE recent (
        client TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (client, repository, digest, kind)
    );
    CREATE INDEX recent_by_time ON recent(at);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    );
    "#,
        postgres: r#"
    CREATE TABLE events (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        project TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT,
        occurred_at BIGINT NOT NULL,
        state TEXT NOT NULL,
        release_at BIGINT,
        body TEXT NOT NULL
    );
    CREATE INDEX events_by_project ON events(project, seq);
    CREATE INDEX events_held ON events(release_at) WHERE state = 'held';
    CREATE INDEX events_held_digest ON events(repository, digest) WHERE state = 'held';
    CREATE TABLE artifacts (
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL,
        media_type TEXT,
        size BIGINT,
        config_digest TEXT,
        chart TEXT,
        platforms TEXT,
        children TEXT,
        blobs TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (repository, digest)
    );
    CREATE TABLE tags (
        repository TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (repository, tag)
    );
    CREATE INDEX tags_by_digest ON tags(repository, digest);
    CREATE TABLE projects (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE policies (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        enabled BIGINT NOT NULL,
        event_types TEXT NOT NULL,
        targets TEXT NOT NULL,
        filters TEXT NOT NULL,
        creator TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        UNIQUE (project, name)
    );
    CREATE TABLE deliveries (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        policy_id BIGINT NOT NULL,
        project TEXT NOT NULL,
        target_index BIGINT NOT NULL,
        target_address TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        not_before BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        last_status BIGINT,
        last_error TEXT,
        claim_token BIGINT,
        lease_until BIGINT,
        target_id BIGINT
    );
    CREATE INDEX deliveries_due ON deliveries(not_before) WHERE state = 'pending';
    CREATE INDEX deliveries_by_policy ON deliveries(policy_id, id);
    CREATE INDEX deliveries_pending_by_target ON deliveries(target_address, not_before, id)
        WHERE state = 'pending';
    CREATE INDEX deliveries_by_event ON deliveries(event_id);
    CREATE INDEX deliveries_lease ON deliveries(lease_until) WHERE state = 'running';
    CREATE INDEX deliveries_by_target ON deliveries(target_id) WHERE state IN ('pending', 'running');
    CREATE TABLE attempts (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        delivery_id BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        status_code BIGINT,
        error_kind TEXT,
        error TEXT,
        response_excerpt TEXT
    );
    CREATE INDEX attempts_by_delivery ON attempts(delivery_id, id);
    CREATE TABLE last_triggers (
        policy_id BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (policy_id, event_type)
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE charts (
        project TEXT NOT NULL,
        name TEXT NOT NULL,
        version TEXT NOT NULL,
        type TEXT NOT NULL,
        app_version TEXT,
        size BIGINT,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (project, name, version)
    );
    CREATE TABLE project_blobs (
        project TEXT NOT NULL,
        digest TEXT NOT NULL,
        size BIGINT NOT NULL,
        refs BIGINT NOT NULL,
        PRIMARY KEY (project, digest)
    );
    CREATE TABLE delivery_targets (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        policy_id BIGINT NOT NULL,
        position BIGINT NOT NULL,
        address TEXT NOT NULL,
        body TEXT NOT NULL,
        current BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE INDEX delivery_targets_by_policy ON delivery_targets(policy_id, position);
    CREATE TABLE quota_projects (
        project TEXT PRIMARY KEY,
        usage BIGINT NOT NULL DEFAULT 0,
        warned BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE quota_reservations (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        project TEXT NOT NULL,
        bytes BIGINT NOT NULL,
        blobs TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX quota_reservations_by_project ON quota_reservations(project, expires_at);
    CREATE TABLE recent (
        client TEXT NOT NULL,
        repository TEXT NOT NULL,
        digest TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        at BIGINT NOT NULL,
        PRIMARY KEY (client, repository, digest, kind)
    );
    CREATE INDEX recent_by_time ON recent(at);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        n BIGINT NOT NULL
    );
    "#,
        then: Some(super::policies::create_target_versions),
    },
    // 7: API users (Harbor's numeric user ids for admin and the htpasswd users), assigned once;
    // admin is 1, as in Harbor
    Migration {
        sqlite: r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    "#,
        postgres: r#"
    CREATE TABLE users (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    );
    "#,
        then: Some(super::users::create_admin),
    },
    // 8: PostgreSQL: the outbox is a queue — every delivery row is updated two or three times
    // within seconds — so its tables are vacuumed and analyzed after a fixed number of changes
    // rather than a fraction of the table; otherwise the partial indexes the dispatcher scans
    // fill with dead entries during a burst and every claim walks over them.
    Migration {
        sqlite: "",
        postgres: r#"
    ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000, autovacuum_vacuum_cost_delay = 0);
    ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
    ALTER TABLE attempts SET (autovacuum_analyze_scale_factor = 0.02);
    "#,
        then: None,
    },
    // 9: PostgreSQL: no index on due times alone. With statistics that said nothing was pending
    // (taken before a burst or a redeliver), the planner claimed a target's deliveries through
    // it — every pending row fetched and sorted, 5 ms per claim at 5,000 — instead of walking
    // `deliveries_pending_by_target` in order; the next due time is found per target instead.
    Migration {
        sqlite: "",
        postgres: "DROP INDEX IF EXISTS deliveries_due;",
        then: None,
    },
    // 10: deliveries counted by state as they change (triggers), so that `/metrics` reads a
    // few counter rows instead of counting the whole outbox history on every scrape (150 ms of
    // CPU after a day of delivered pulls). SQLite has one writer: one row per state. PostgreSQL
    // has many: each server process adds to rows of its own (`shard` = its pid, no lock shared
    // between connections), one statement per changing statement; housekeeping folds the rows
    // of processes that ended into shard 0 (`outbox::fold_counts`).
    Migration {
        sqlite: r#"
    CREATE TABLE delivery_counts (
        state TEXT NOT NULL,
        shard INTEGER NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (state, shard)
    );
    INSERT INTO delivery_counts (state, shard, n)
        VALUES ('pending', 0, 0), ('running', 0, 0), ('succeeded', 0, 0), ('dead', 0, 0);
    UPDATE delivery_counts SET n = (SELECT COUNT(*) FROM deliveries d WHERE d.state = delivery_counts.state);
    CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON deliveries BEGIN
        UPDATE delivery_counts SET n = n + 1 WHERE state = NEW.state AND shard = 0;
    END;
    CREATE TRIGGER deliveries_counted_update AFTER UPDATE OF state ON deliveries
    WHEN OLD.state <> NEW.state BEGIN
        UPDATE delivery_counts SET n = n - 1 WHERE state = OLD.state AND shard = 0;
        UPDATE delivery_counts SET n = n + 1 WHERE state = NEW.state AND shard = 0;
    END;
    CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON deliveries BEGIN
        UPDATE delivery_counts SET n = n - 1 WHERE state = OLD.state AND shard = 0;
    END;
    "#,
        postgres: r#"
    CREATE TABLE delivery_counts (
        state TEXT NOT NULL,
        shard BIGINT NOT NULL,
        n BIGINT NOT NULL,
        PRIMARY KEY (state, shard)
    );
    CREATE FUNCTION wharf_count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO delivery_counts AS c (state, shard, n)
                SELECT state, pg_backend_pid(), COUNT(*) FROM new_rows GROUP BY state ORDER BY state
                ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO delivery_counts AS c (state, shard, n)
                SELECT state, pg_backend_pid(), -COUNT(*) FROM old_rows GROUP BY state ORDER BY state
                ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n;
        ELSE
            INSERT INTO delivery_counts AS c (state, shard, n)
                SELECT state, pg_backend_pid(), SUM(d) FROM (
                    SELECT state, 1 AS d FROM new_rows UNION ALL SELECT state, -1 FROM old_rows
                ) x GROUP BY state HAVING SUM(d) <> 0 ORDER BY state
                ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n;
        END IF;
        RETURN NULL;
    END
    $f$;
    CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON deliveries
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION wharf_count_deliveries();
    CREATE TRIGGER deliveries_counted_update AFTER UPDATE ON deliveries
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION wharf_count_deliveries();
    CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON deliveries
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION wharf_count_deliveries();
    INSERT INTO delivery_counts (state, shard, n)
        SELECT state, 0, COUNT(*) FROM deliveries GROUP BY state;
    "#,
        then: None,
    },
    // 11: the index that finds open deliveries of a target version (`drop_unused_targets`)
    // only serves queries that name a target version. Its predicate (`state IN ('pending',
    // 'running')`) was implied by the claim's `state = 'pending'`: with statistics taken while
    // nothing was pending (before a redeliver or a burst), PostgreSQL claimed through it —
    // every open delivery fetched and sorted, 17 ms per claim of 32 at 10,000 pending (270 µs
    // per claimed row instead of 48) — rather than walking `deliveries_pending_by_target`.
    Migration {
        sqlite: r#"
    DROP INDEX deliveries_by_target;
    CREATE INDEX deliveries_by_target ON deliveries(target_id)
        WHERE target_id IS NOT NULL AND state IN ('pending', 'running');
    "#,
        postgres: r#"
    DROP INDEX deliveries_by_target;
    CREATE INDEX deliveries_by_target ON deliveries(target_id)
        WHERE target_id IS NOT NULL AND state IN ('pending', 'running');
    "#,
        then: None,
    },
    // 12: the counters of migration 10 keep only the final states (`succeeded`, `dead`): the
    // open ones (`pending`, `running`) are counted when `/metrics` is scraped, through their
    // partial indexes (a cost that follows the queue, not the history). Creating a delivery
    // no longer writes a counter: on PostgreSQL the statement trigger on every insert cost
    // ~0.1 ms in the commit of each push (pgbench, this project's 2-core bench machine), the
    // counter row updates included. `wharf store copy` counts what it copied once, at its end.
    Migration {
        sqlite: r#"
    DROP TRIGGER deliveries_counted_insert;
    DROP TRIGGER deliveries_counted_update;
    DROP TRIGGER deliveries_counted_delete;
    DELETE FROM delivery_counts WHERE state NOT IN ('succeeded', 'dead');
    CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON deliveries
    WHEN NEW.state IN ('succeeded', 'dead') BEGIN
        UPDATE delivery_counts SET n = n + 1 WHERE state = NEW.state AND shard = 0;
    END;
    CREATE TRIGGER deliveries_counted_update AFTER UPDATE OF state ON deliveries
    WHEN OLD.state <> NEW.state
      AND (OLD.state IN ('succeeded', 'dead') OR NEW.state IN ('succeeded', 'dead')) BEGIN
        UPDATE delivery_counts SET n = n - 1 WHERE state = OLD.state AND shard = 0;
        UPDATE delivery_counts SET n = n + 1 WHERE state = NEW.state AND shard = 0;
    END;
    CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON deliveries
    WHEN OLD.state IN ('succeeded', 'dead') BEGIN
        UPDATE delivery_counts SET n = n - 1 WHERE state = OLD.state AND shard = 0;
    END;
    "#,
        postgres: r#"
    DROP TRIGGER deliveries_counted_insert ON deliveries;
    CREATE OR REPLACE FUNCTION wharf_count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO delivery_counts AS c (state, shard, n)
                SELECT state, pg_backend_pid(), -COUNT(*) FROM old_rows
                WHERE state IN ('succeeded', 'dead') GROUP BY state ORDER BY state
                ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n;
        ELSE
            INSERT INTO delivery_counts AS c (state, shard, n)
                SELECT state, pg_backend_pid(), SUM(d) FROM (
                    SELECT state, 1 AS d FROM new_rows WHERE state IN ('succeeded', 'dead')
                    UNION ALL
                    SELECT state, -1 FROM old_rows WHERE state IN ('succeeded', 'dead')
                ) x GROUP BY state HAVING SUM(d) <> 0 ORDER BY state
                ON CONFLICT (state, shard) DO UPDATE SET n = c.n + excluded.n;
        END IF;
        RETURN NULL;
    END
    $f$;
    DELETE FROM delivery_counts WHERE state NOT IN ('succeeded', 'dead');
    "#,
        then: None,
    },
    // 13: no table changes: events are now written with short-keyed bodies
    // (`events::Body`), which a wharf of schema 12 or older cannot read. The version moves on
    // so that such a binary refuses to start on a database a newer one has written to.
    ROWS_ONLY,
    // 14: a delivery names its event by the event's `seq` (an integer) instead of its id (36
    // characters in the row and again in `deliveries_by_event`: ~70 bytes per delivery). Event
    // bodies keep the time's sub-millisecond part only (the row has the milliseconds) and a
    // UUID request id as 22 characters (`events::Body`), which older binaries cannot read.
    Migration {
        sqlite: r#"
    ALTER TABLE deliveries ADD COLUMN event_seq INTEGER;
    UPDATE deliveries SET event_seq = (SELECT e.seq FROM events e WHERE e.id = deliveries.event_id);
    DROP INDEX deliveries_by_event;
    ALTER TABLE deliveries DROP COLUMN event_id;
    CREATE INDEX deliveries_by_event ON deliveries(event_seq);
    "#,
        postgres: r#"
    ALTER TABLE deliveries ADD COLUMN event_seq BIGINT;
    UPDATE deliveries d SET event_seq = e.seq FROM events e WHERE e.id = d.event_id;
    DROP INDEX deliveries_by_event;
    ALTER TABLE deliveries DROP COLUMN event_id;
    CREATE INDEX deliveries_by_event ON deliveries(event_seq);
    "#,
        then: None,
    },
    // 15: an event's id is kept as its 16 bytes, not as 36 characters of text (~20 bytes less
    // in its row and ~20 in the unique index: ~40 B of a delivered pull's ~556). PostgreSQL's
    // column becomes `uuid`; SQLite cannot change a column's declared type without rebuilding
    // the table, and keeps a BLOB as it is in a TEXT column, so its rows are rewritten in place
    // (an id that is not a UUID's text, which no wharf wrote, stays text and still reads). The
    // API's `~` and range filters on ids compare the canonical text: `wharf_uuid_text(id)`
    // (SQLite: registered on each connection; PostgreSQL: the function below).
    Migration {
        sqlite: r#"
    UPDATE events SET id = unhex(replace(id, '-', ''))
        WHERE typeof(id) = 'text' AND length(id) = 36 AND length(replace(id, '-', '')) = 32
          AND unhex(replace(id, '-', '')) IS NOT NULL;
    "#,
        postgres: r#"
    ALTER TABLE events ALTER COLUMN id TYPE uuid USING CAST(id AS uuid);
    CREATE FUNCTION wharf_uuid_text(uuid) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS 'SELECT CAST($1 AS text)';
    "#,
        then: None,
    },
    // 16: SQLite keeps an event's digest, when it is a canonical `sha256:<64 lowercase hex>`, as
    // its 32 bytes (a BLOB; any other digest stays text, and SQLite tells the two apart by each
    // value's storage class): ~39 bytes less per event. PostgreSQL keeps text: a `bytea` column
    // would need an encoding that tells 32 bytes of digest from 32 bytes of text, for ~39 bytes
    // of a row. `wharf_digest_text(digest)` gives the text on both (the API's `~`, ranges and
    // sorting on digests).
    Migration {
        sqlite: r#"
    UPDATE events SET digest = unhex(substr(digest, 8))
        WHERE typeof(digest) = 'text' AND length(digest) = 71 AND substr(digest, 1, 7) = 'sha256:'
          AND substr(digest, 8) NOT GLOB '*[^0-9a-f]*';
    "#,
        postgres: r#"
    CREATE FUNCTION wharf_digest_text(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS 'SELECT $1';
    "#,
        then: None,
    },
    // 17: no table changes: a pull's event takes the id wharf made for its request, and its
    // body says so (`"Q":""`) instead of holding the id again, which a wharf of schema 16 or
    // older cannot read. The version moves on so that such a binary refuses the database.
    ROWS_ONLY,
    // 18: a delivery's first successful attempt is kept on its row (start, duration, status,
    // response excerpt) instead of a row of `attempts` and its index entry: a delivered event
    // is one delivery row. Other attempts stay in `attempts`; task ids become each attempt's
    // place among its delivery's attempts (`outbox::attempts`). Rows written before keep
    // their attempts where they are.
    Migration {
        sqlite: r#"
    ALTER TABLE deliveries ADD COLUMN first_started_at INTEGER;
    ALTER TABLE deliveries ADD COLUMN first_duration_ms INTEGER;
    ALTER TABLE deliveries ADD COLUMN first_status INTEGER;
    ALTER TABLE deliveries ADD COLUMN first_excerpt TEXT;
    "#,
        postgres: r#"
    ALTER TABLE deliveries ADD COLUMN first_started_at BIGINT, ADD COLUMN first_duration_ms BIGINT,
        ADD COLUMN first_status BIGINT, ADD COLUMN first_excerpt TEXT;
    "#,
        then: None,
    },
    // 19: a delivery no longer copies its event's type and project: the claim, the executions
    // list and the API read them from the event (`event_seq`), ~20 bytes less per delivery
    // (more with longer project names). A delivery whose event is gone (a schema-13 row whose
    // event could not be found) shows an empty type. SQLite rewrites the table once.
    Migration {
        sqlite: r#"
    ALTER TABLE deliveries DROP COLUMN event_type;
    ALTER TABLE deliveries DROP COLUMN project;
    "#,
        postgres: r#"
    ALTER TABLE deliveries DROP COLUMN event_type, DROP COLUMN project;
    "#,
        then: None,
    },
    // 20: an event's body is packed (`events::body`: a version byte and a protobuf message,
    // ~45 bytes for a pull instead of ~100 of JSON), which a wharf of schema 19 or older cannot
    // read. PostgreSQL's column becomes `bytea` (rewriting the table: JSON bodies written
    // before stay, as their UTF-8); SQLite keeps a BLOB as it is in the TEXT column, and its
    // JSON bodies stay text. Both still read.
    Migration {
        sqlite: "",
        postgres: r#"
    ALTER TABLE events ALTER COLUMN body TYPE bytea USING convert_to(body, 'UTF8');
    "#,
        then: None,
    },
    // 21: an event's type and state are kept as small integers (`events::type_code`,
    // `events::EventState::code`) instead of their names (13 and 9 characters for a pull):
    // ~20 bytes less per event. The partial indexes on held events are made again on the
    // codes. `wharf_event_type(type)` and `wharf_event_state(state)` give the names (the API's
    // filters and sorting); an unknown name becomes 0, which reads as an unreadable event.
    // SQLite cannot change a column's type: new columns, filled, replace the old ones (the
    // table is rewritten).
    Migration {
        sqlite: r#"
    DROP INDEX events_held;
    DROP INDEX events_held_digest;
    ALTER TABLE events ADD COLUMN type_code INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE events ADD COLUMN state_code INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET type_code = CASE type
        WHEN 'PUSH_ARTIFACT' THEN 1 WHEN 'PULL_ARTIFACT' THEN 2 WHEN 'DELETE_ARTIFACT' THEN 3
        WHEN 'UPLOAD_CHART' THEN 4 WHEN 'DOWNLOAD_CHART' THEN 5 WHEN 'DELETE_CHART' THEN 6
        WHEN 'SCANNING_COMPLETED' THEN 7 WHEN 'SCANNING_FAILED' THEN 8
        WHEN 'SCANNING_STOPPED' THEN 9 WHEN 'QUOTA_EXCEED' THEN 10 WHEN 'QUOTA_WARNING' THEN 11
        WHEN 'REPLICATION' THEN 12 WHEN 'TAG_RETENTION' THEN 13 ELSE 0 END,
      state_code = CASE state WHEN 'held' THEN 1 WHEN 'published' THEN 2 WHEN 'cancelled' THEN 3
        ELSE 0 END;
    ALTER TABLE events DROP COLUMN type;
    ALTER TABLE events DROP COLUMN state;
    ALTER TABLE events RENAME COLUMN type_code TO type;
    ALTER TABLE events RENAME COLUMN state_code TO state;
    CREATE INDEX events_held ON events(release_at) WHERE state = 1;
    CREATE INDEX events_held_digest ON events(repository, digest) WHERE state = 1;
    "#,
        postgres: r#"
    DROP INDEX events_held;
    DROP INDEX events_held_digest;
    ALTER TABLE events ALTER COLUMN type TYPE smallint USING (CASE type
        WHEN 'PUSH_ARTIFACT' THEN 1 WHEN 'PULL_ARTIFACT' THEN 2 WHEN 'DELETE_ARTIFACT' THEN 3
        WHEN 'UPLOAD_CHART' THEN 4 WHEN 'DOWNLOAD_CHART' THEN 5 WHEN 'DELETE_CHART' THEN 6
        WHEN 'SCANNING_COMPLETED' THEN 7 WHEN 'SCANNING_FAILED' THEN 8
        WHEN 'SCANNING_STOPPED' THEN 9 WHEN 'QUOTA_EXCEED' THEN 10 WHEN 'QUOTA_WARNING' THEN 11
        WHEN 'REPLICATION' THEN 12 WHEN 'TAG_RETENTION' THEN 13 ELSE 0 END),
      ALTER COLUMN state TYPE smallint USING (CASE state
        WHEN 'held' THEN 1 WHEN 'published' THEN 2 WHEN 'cancelled' THEN 3 ELSE 0 END);
    CREATE INDEX events_held ON events(release_at) WHERE state = 1;
    CREATE INDEX events_held_digest ON events(repository, digest) WHERE state = 1;
    CREATE FUNCTION wharf_event_type(smallint) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $f$ SELECT CASE $1
        WHEN 1 THEN 'PUSH_ARTIFACT' WHEN 2 THEN 'PULL_ARTIFACT' WHEN 3 THEN 'DELETE_ARTIFACT'
        WHEN 4 THEN 'UPLOAD_CHART' WHEN 5 THEN 'DOWNLOAD_CHART' WHEN 6 THEN 'DELETE_CHART'
        WHEN 7 THEN 'SCANNING_COMPLETED' WHEN 8 THEN 'SCANNING_FAILED'
        WHEN 9 THEN 'SCANNING_STOPPED' WHEN 10 THEN 'QUOTA_EXCEED' WHEN 11 THEN 'QUOTA_WARNING'
        WHEN 12 THEN 'REPLICATION' WHEN 13 THEN 'TAG_RETENTION' ELSE CAST($1 AS text) END $f$;
    CREATE FUNCTION wharf_event_state(smallint) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $f$ SELECT CASE $1 WHEN 1 THEN 'held' WHEN 2 THEN 'published' WHEN 3 THEN 'cancelled'
        ELSE CAST($1 AS text) END $f$;
    "#,
        then: None,
    },
    // 22: the host of an event's resource URL (the same for nearly every event of a registry)
    // is kept once, in `hosts`, and an event names it by id (`host_id`) instead of holding it
    // in its body: ~15 bytes less per event with a host as short as `127.0.0.1:5000`. Bodies
    // written before keep theirs. The table is bounded (`events::MAX_HOSTS`).
    Migration {
        sqlite: r#"
    CREATE TABLE hosts (id INTEGER PRIMARY KEY, host TEXT NOT NULL UNIQUE);
    ALTER TABLE events ADD COLUMN host_id INTEGER;
    "#,
        postgres: r#"
    CREATE TABLE hosts (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, host TEXT NOT NULL UNIQUE);
    ALTER TABLE events ADD COLUMN host_id BIGINT;
    "#,
        then: None,
    },
    // 23: the side endpoint's idempotency keys (`idempotency`): a report retried with the key
    // of one recorded is answered as it was, without a second event.
    Migration {
        sqlite: r#"
    CREATE TABLE idempotency_keys (
        caller TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        event_id TEXT NOT NULL,
        answer TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (caller, key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
    "#,
        postgres: r#"
    CREATE TABLE idempotency_keys (
        caller TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        event_id TEXT NOT NULL,
        answer TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (caller, key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
    "#,
        then: None,
    },
    // 24 (PostgreSQL only): a pushed manifest is learned by one call of a function
    // (`knowledge::learn_pushed`) instead of six statements: each statement sent costs the
    // server more (its own Bind/Execute/Sync, executor start and answer) than most of them
    // take to run. The function runs them in the same order, each with its own snapshot, and
    // takes the same locks in the same order.
    Migration {
        sqlite: "",
        postgres: r#"
    CREATE FUNCTION wharf_learn_pushed(lock_key BIGINT, repo TEXT, dig TEXT, a_kind TEXT,
        a_media_type TEXT, a_size BIGINT, a_config_digest TEXT, a_chart TEXT, a_platforms TEXT,
        a_children TEXT, a_blobs TEXT, now_ms BIGINT, proj TEXT, blob_count BIGINT, a_tag TEXT)
    RETURNS void LANGUAGE plpgsql VOLATILE AS $f$
    BEGIN
        -- the manifest's lock, shared with other pushes of it (a delete takes it alone)
        PERFORM pg_advisory_xact_lock_shared(lock_key);
        INSERT INTO artifacts (repository, digest, kind, media_type, size, config_digest, chart,
            platforms, children, blobs, created_at)
        VALUES (repo, dig, a_kind, a_media_type, a_size, a_config_digest, a_chart, a_platforms,
            a_children, a_blobs, now_ms)
        ON CONFLICT (repository, digest) DO NOTHING;
        IF FOUND THEN
            -- new: its blobs counted under the project's row lock, taken first
            IF blob_count > 0 THEN
                INSERT INTO quota_projects (project, usage, warned) VALUES (proj, 0, 0)
                ON CONFLICT (project) DO UPDATE SET usage = quota_projects.usage;
                WITH refs AS (
                    INSERT INTO project_blobs (project, digest, size, refs)
                    SELECT proj, b.digest, b.size, 1 FROM (
                        SELECT DISTINCT ON (e->>0) e->>0 AS digest,
                            LEAST((e->>1)::numeric, 9223372036854775807)::bigint AS size
                        FROM jsonb_array_elements(CAST(a_blobs AS jsonb)) e
                        ORDER BY e->>0, (e->>1)::numeric) b
                    ON CONFLICT (project, digest) DO UPDATE SET refs = project_blobs.refs + 1
                    RETURNING refs, size)
                UPDATE quota_projects SET usage = LEAST(usage::numeric
                    + (SELECT COALESCE(SUM(size), 0) FROM refs WHERE refs = 1),
                    9223372036854775807)::bigint
                WHERE project = proj AND EXISTS (SELECT 1 FROM refs WHERE refs = 1);
            END IF;
        ELSE
            -- known: rewritten only when it changed (a retag writes and locks nothing)
            UPDATE artifacts SET kind = a_kind, media_type = a_media_type, size = a_size,
                config_digest = a_config_digest, chart = a_chart, platforms = a_platforms,
                children = a_children, blobs = a_blobs
            WHERE repository = repo AND digest = dig AND (kind IS DISTINCT FROM a_kind
                OR media_type IS DISTINCT FROM a_media_type OR size IS DISTINCT FROM a_size
                OR config_digest IS DISTINCT FROM a_config_digest
                OR chart IS DISTINCT FROM a_chart OR platforms IS DISTINCT FROM a_platforms
                OR children IS DISTINCT FROM a_children OR blobs IS DISTINCT FROM a_blobs);
        END IF;
        -- the tag last (see knowledge::learn_manifest)
        IF a_tag IS NOT NULL THEN
            INSERT INTO tags (repository, tag, digest, updated_at) VALUES (repo, a_tag, dig, now_ms)
            ON CONFLICT (repository, tag) DO UPDATE
                SET digest = excluded.digest, updated_at = excluded.updated_at;
        END IF;
    END
    $f$;
    "#,
        then: None,
    },
];

/// A database newer than this binary, or one the migration cannot handle.
pub fn refuse_newer(found: i64) -> Result<(), StoreError> {
    if found > latest() {
        return Err(StoreError::SchemaTooNew {
            found,
            known: latest(),
        });
    }
    Ok(())
}
