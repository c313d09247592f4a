//! The database schema as numbered migrations, applied by `conduit migrate` ([`migrate`]) under
//! an advisory lock so two replicas upgrading at once apply each migration once; a gateway only
//! checks ([`check`]) and refuses a schema it does not know, naming both versions.
//!
//! Migrations are append-only: a released one never changes (its SQL is part of what
//! `conduit_migrations` records as applied); a change is a new migration.

use tokio_postgres::Client;

use conduit_core::error::{Error, Result};

use crate::pg_err;

/// The schema version this build reads and writes: the last migration's number.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock key `conduit migrate` holds (`'conduit'` as bytes).
const MIGRATION_LOCK: i64 = 0x0063_6f6e_6475_6974;

/// Each migration's SQL, in order; migration `n` is `MIGRATIONS[n - 1]`.
const MIGRATIONS: &[&str] = &[
    // 1: everything a single-node sled store holds, plus the shared budget counters.
    r#"
CREATE TABLE conduit_meta (name text PRIMARY KEY, value text NOT NULL);

CREATE TABLE conduit_keys (
    hash bytea PRIMARY KEY CHECK (length(hash) = 32),
    id text NOT NULL UNIQUE,
    created_at bigint NOT NULL,
    record text NOT NULL
);

CREATE TABLE conduit_credentials (
    provider text NOT NULL,
    id text NOT NULL,
    sealed text NOT NULL,
    PRIMARY KEY (provider, id)
);

CREATE TABLE conduit_budget_limits (scope text PRIMARY KEY, limits text NOT NULL);

CREATE TABLE conduit_spend (
    day text NOT NULL,
    key_id text NOT NULL,
    model text NOT NULL,
    owner text NOT NULL,
    team text NOT NULL,
    provider text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    estimated bigint NOT NULL DEFAULT 0,
    unpriced bigint NOT NULL DEFAULT 0,
    input bigint NOT NULL DEFAULT 0,
    output bigint NOT NULL DEFAULT 0,
    cache_read bigint NOT NULL DEFAULT 0,
    cache_write bigint NOT NULL DEFAULT 0,
    cache_write_1h bigint NOT NULL DEFAULT 0,
    web_searches bigint NOT NULL DEFAULT 0,
    cost_micros bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_id, model)
);

CREATE TABLE conduit_findings (id text PRIMARY KEY, time bigint NOT NULL, record text NOT NULL);

CREATE TABLE conduit_policy_modes (name text PRIMARY KEY, mode text NOT NULL);

CREATE TABLE conduit_prices (provider text NOT NULL, model text NOT NULL, row text NOT NULL, PRIMARY KEY (provider, model));

CREATE TABLE conduit_uploads (provider text NOT NULL, id text NOT NULL, record text NOT NULL, PRIMARY KEY (provider, id));

-- One row per budget scope and period: the invariant committed + reserved + leased <= cap is
-- kept by conduit_reserve, the only statement that raises reserved.
CREATE TABLE conduit_budget_counters (
    scope text NOT NULL,
    period text NOT NULL,
    committed bigint NOT NULL DEFAULT 0 CHECK (committed >= 0),
    reserved bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    leased bigint NOT NULL DEFAULT 0 CHECK (leased >= 0),
    PRIMARY KEY (scope, period)
);

-- Every process using the budgets, by life (a random id per start), with its last heartbeat: a
-- life that stopped beating is dead, and what it held counts as spent.
CREATE TABLE conduit_lives (life text PRIMARY KEY, replica text NOT NULL, seen_at bigint NOT NULL);

-- A request's worst case, held until its replica settles it; a hold its replica never settles
-- (crashed) is reaped after expires_at: its amount counts as spent, and a late settle corrects it.
CREATE TABLE conduit_budget_holds (
    id text PRIMARY KEY,
    replica text NOT NULL,
    life text NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    scopes text[] NOT NULL,
    periods text[] NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    reaped boolean NOT NULL DEFAULT false
);
CREATE INDEX conduit_budget_holds_expiry ON conduit_budget_holds (expires_at) WHERE NOT reaped;

-- Reserves p_amount against every (scope, period, cap), all or nothing, in one round trip.
-- Returns no row when reserved; otherwise the first counter without room.
CREATE FUNCTION conduit_reserve(p_hold text, p_replica text, p_life text, p_scopes text[], p_periods text[], p_caps bigint[],
                                p_amount bigint, p_now bigint, p_expires bigint)
RETURNS TABLE (scope text, period text, cap bigint, committed bigint, held bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    updated integer;
BEGIN
    -- Lock the counters in one order, so replicas reserving overlapping scopes never deadlock.
    PERFORM 1 FROM conduit_budget_counters c
        JOIN unnest(p_scopes, p_periods) AS w(s, p) ON c.scope = w.s AND c.period = w.p
        ORDER BY c.scope, c.period
        FOR UPDATE OF c;
    RETURN QUERY
        SELECT w.s, w.p, w.cap, c.committed, c.reserved + c.leased
        FROM unnest(p_scopes, p_periods, p_caps) AS w(s, p, cap)
        JOIN conduit_budget_counters c ON c.scope = w.s AND c.period = w.p
        WHERE c.committed + c.reserved + c.leased + p_amount > w.cap
        ORDER BY w.s, w.p
        LIMIT 1;
    IF FOUND THEN
        RETURN;
    END IF;
    UPDATE conduit_budget_counters c SET reserved = c.reserved + p_amount
        FROM unnest(p_scopes, p_periods, p_caps) AS w(s, p, cap)
        WHERE c.scope = w.s AND c.period = w.p AND c.committed + c.reserved + c.leased + p_amount <= w.cap;
    GET DIAGNOSTICS updated = ROW_COUNT;
    IF updated <> cardinality(p_scopes) THEN
        RAISE EXCEPTION 'conduit_reserve: % of % budget counters do not exist', cardinality(p_scopes) - updated,
            cardinality(p_scopes);
    END IF;
    INSERT INTO conduit_budget_holds (id, replica, life, amount, scopes, periods, created_at, expires_at)
        VALUES (p_hold, p_replica, p_life, p_amount, p_scopes, p_periods, p_now, p_expires);
END
$fn$;

-- Settles a hold to p_actual (NULL: released unused). A hold already reaped was counted as
-- spent in full; settling it corrects committed to the real cost. Returns false for no such hold.
CREATE FUNCTION conduit_settle(p_hold text, p_actual bigint)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    h conduit_budget_holds%ROWTYPE;
BEGIN
    DELETE FROM conduit_budget_holds WHERE id = p_hold RETURNING * INTO h;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM conduit_budget_counters c
        JOIN unnest(h.scopes, h.periods) AS w(s, p) ON c.scope = w.s AND c.period = w.p
        ORDER BY c.scope, c.period
        FOR UPDATE OF c;
    IF h.reaped THEN
        UPDATE conduit_budget_counters c
            SET committed = greatest(c.committed - h.amount + coalesce(p_actual, 0), 0)
            FROM unnest(h.scopes, h.periods) AS w(s, p)
            WHERE c.scope = w.s AND c.period = w.p;
    ELSE
        UPDATE conduit_budget_counters c
            SET reserved = c.reserved - h.amount, committed = c.committed + coalesce(p_actual, 0)
            FROM unnest(h.scopes, h.periods) AS w(s, p)
            WHERE c.scope = w.s AND c.period = w.p;
    END IF;
    RETURN true;
END
$fn$;

-- Counts as spent the holds that expired or whose life stopped beating (last seen before
-- p_alive_since), at most 500 per call; returns how many. Holds are taken first (SKIP LOCKED: two
-- reapers never wait on each other), then every counter they touch in one order.
CREATE FUNCTION conduit_reap(p_now bigint, p_alive_since bigint)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    ids text[];
BEGIN
    SELECT array_agg(id) INTO ids FROM (
        SELECT h.id FROM conduit_budget_holds h
        WHERE NOT h.reaped AND (h.expires_at < p_now OR NOT EXISTS (
            SELECT 1 FROM conduit_lives v WHERE v.life = h.life AND v.seen_at >= p_alive_since))
        ORDER BY h.id
        LIMIT 500
        FOR UPDATE OF h SKIP LOCKED
    ) picked;
    -- A reaped hold nobody settled within a day never will be; lives gone a day are forgotten.
    DELETE FROM conduit_budget_holds WHERE reaped AND expires_at < p_now - 86400;
    DELETE FROM conduit_lives WHERE seen_at < p_now - 86400;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM conduit_budget_counters c
        JOIN (SELECT DISTINCT unnest(h.scopes) AS s, unnest(h.periods) AS p
              FROM conduit_budget_holds h WHERE h.id = ANY (ids)) w
        ON c.scope = w.s AND c.period = w.p
        ORDER BY c.scope, c.period
        FOR UPDATE OF c;
    UPDATE conduit_budget_counters c
        SET reserved = c.reserved - t.amount, committed = c.committed + t.amount
        FROM (SELECT x.s, x.p, sum(x.amount) AS amount
              FROM (SELECT unnest(h.scopes) AS s, unnest(h.periods) AS p, h.amount
                    FROM conduit_budget_holds h WHERE h.id = ANY (ids)) x
              GROUP BY x.s, x.p) t
        WHERE c.scope = t.s AND c.period = t.p;
    UPDATE conduit_budget_holds SET reaped = true WHERE id = ANY (ids);
    RETURN cardinality(ids);
END
$fn$;
"#,
    // 2: leases — a replica holds a slice of a shared (team, org) budget and admits against it
    // locally; the slice counts in `leased` until it is settled (spent) or returned.
    r#"
CREATE TABLE conduit_budget_leases (
    scope text NOT NULL,
    period text NOT NULL,
    replica text NOT NULL,
    life text NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    expires_at bigint NOT NULL,
    PRIMARY KEY (scope, period, life)
);

-- Grants a lease of at least p_need (else nothing: the counter lacks room) and at most the larger of
-- p_need and min(p_want, a quarter of the room left), so a nearly spent budget goes out in small
-- pieces. Returns the grant (0: refused), the counter's figures after it, and what the lease holds
-- in all after it (less than the replica believes it holds: a reaper took the rest).
CREATE FUNCTION conduit_lease(p_scope text, p_period text, p_cap bigint, p_need bigint, p_want bigint,
                              p_replica text, p_life text, p_expires bigint)
RETURNS TABLE (granted bigint, committed bigint, held bigint, others_leased bigint, lease_total bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    c conduit_budget_counters%ROWTYPE;
    mine bigint;
    room bigint;
    g bigint;
BEGIN
    SELECT * INTO c FROM conduit_budget_counters WHERE scope = p_scope AND period = p_period FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conduit_lease: no budget counter for % %', p_scope, p_period;
    END IF;
    SELECT coalesce(sum(amount), 0) INTO mine FROM conduit_budget_leases l
        WHERE l.scope = p_scope AND l.period = p_period AND l.life = p_life;
    room := p_cap - c.committed - c.reserved - c.leased;
    IF room < p_need THEN
        RETURN QUERY SELECT 0::bigint, c.committed, c.reserved + c.leased, c.leased - mine, mine;
        RETURN;
    END IF;
    g := greatest(p_need, least(p_want, room / 4));
    UPDATE conduit_budget_counters u SET leased = u.leased + g
        WHERE u.scope = p_scope AND u.period = p_period AND u.committed + u.reserved + u.leased + g <= p_cap;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conduit_lease: the counter changed under its lock';
    END IF;
    INSERT INTO conduit_budget_leases (scope, period, replica, life, amount, expires_at)
        VALUES (p_scope, p_period, p_replica, p_life, g, p_expires)
        ON CONFLICT (scope, period, life) DO UPDATE
        SET amount = conduit_budget_leases.amount + g, expires_at = p_expires;
    RETURN QUERY SELECT g, c.committed, c.reserved + c.leased + g, c.leased - mine, mine + g;
END
$fn$;

-- Moves p_spent of this life's lease into committed, gives p_returned back and extends it.
-- Returns false when the lease is gone (reaped: all of it was counted as spent already).
CREATE FUNCTION conduit_lease_settle(p_scope text, p_period text, p_life text, p_spent bigint, p_returned bigint,
                                     p_expires bigint)
RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    l conduit_budget_leases%ROWTYPE;
    moved bigint;
    back bigint;
BEGIN
    PERFORM 1 FROM conduit_budget_counters WHERE scope = p_scope AND period = p_period FOR UPDATE;
    SELECT * INTO l FROM conduit_budget_leases
        WHERE scope = p_scope AND period = p_period AND life = p_life FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Never move more than the lease holds (a real cost above the worst case is committed in full:
    -- spent is spent).
    back := least(p_returned, l.amount);
    moved := least(p_spent, l.amount - back);
    UPDATE conduit_budget_counters
        SET committed = committed + p_spent, leased = leased - moved - back
        WHERE scope = p_scope AND period = p_period;
    IF l.amount - moved - back = 0 THEN
        DELETE FROM conduit_budget_leases WHERE scope = p_scope AND period = p_period AND life = p_life;
    ELSE
        UPDATE conduit_budget_leases SET amount = amount - moved - back, expires_at = p_expires
            WHERE scope = p_scope AND period = p_period AND life = p_life;
    END IF;
    RETURN true;
END
$fn$;

-- Counts as spent the leases that expired or whose life stopped beating, as conduit_reap does for
-- holds (counters locked first, in one order, then the leases); returns how many.
CREATE FUNCTION conduit_reap_leases(p_now bigint, p_alive_since bigint)
RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    l conduit_budget_leases%ROWTYPE;
    n integer := 0;
BEGIN
    PERFORM 1 FROM conduit_budget_counters c
        JOIN (SELECT DISTINCT x.scope, x.period FROM conduit_budget_leases x
              WHERE x.expires_at < p_now OR NOT EXISTS (
                  SELECT 1 FROM conduit_lives v WHERE v.life = x.life AND v.seen_at >= p_alive_since)) w
        ON c.scope = w.scope AND c.period = w.period
        ORDER BY c.scope, c.period
        FOR UPDATE OF c;
    FOR l IN
        SELECT * FROM conduit_budget_leases x
        WHERE x.expires_at < p_now OR NOT EXISTS (
            SELECT 1 FROM conduit_lives v WHERE v.life = x.life AND v.seen_at >= p_alive_since)
        ORDER BY x.scope, x.period, x.life
        FOR UPDATE SKIP LOCKED
    LOOP
        UPDATE conduit_budget_counters
            SET committed = committed + l.amount, leased = leased - l.amount
            WHERE scope = l.scope AND period = l.period;
        DELETE FROM conduit_budget_leases WHERE scope = l.scope AND period = l.period AND life = l.life;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$fn$;
"#,
    // 3: sign-in records (`conduit_state::signin`): device grants, sessions, users — JSON values
    // under names, written by compare-and-swap.
    r#"
CREATE TABLE conduit_signin (name text COLLATE "C" PRIMARY KEY, value text NOT NULL);
"#,
];

/// Applies every migration the database lacks, under the advisory lock; returns the versions
/// applied (empty when it was current). Refuses a database newer than this build.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| pg_err("taking the migration lock", e))?;
    let result = apply(client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| pg_err("releasing the migration lock", e));
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<Vec<i32>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS conduit_migrations (version integer PRIMARY KEY, applied_at bigint NOT NULL)",
        )
        .await
        .map_err(|e| pg_err("creating the migrations table", e))?;
    let current = current_version(client).await?.unwrap_or(0);
    refuse_newer(current)?;
    let mut applied = Vec::new();
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as i32 + 1;
        let tx = client
            .transaction()
            .await
            .map_err(|e| pg_err("starting a migration", e))?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| pg_err(&format!("applying migration {version}"), e))?;
        tx.execute(
            "INSERT INTO conduit_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &conduit_core::clock::now_unix()],
        )
        .await
        .map_err(|e| pg_err(&format!("recording migration {version}"), e))?;
        tx.commit()
            .await
            .map_err(|e| pg_err(&format!("committing migration {version}"), e))?;
        applied.push(version);
    }
    Ok(applied)
}

/// The database's schema version (`None`: never migrated).
pub async fn current_version(client: &Client) -> Result<Option<i32>> {
    let exists: bool = client
        .query_one("SELECT to_regclass('conduit_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| pg_err("reading the schema version", e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM conduit_migrations", &[])
        .await
        .map_err(|e| pg_err("reading the schema version", e))?;
    Ok(row.get::<_, Option<i32>>(0))
}

/// Checks the database is at exactly this build's version.
pub async fn check(client: &Client) -> Result<()> {
    match current_version(client).await? {
        Some(v) if v == SCHEMA_VERSION => Ok(()),
        Some(v) if v > SCHEMA_VERSION => refuse_newer(v),
        found => Err(Error::msg(format!(
            "the PostgreSQL database has schema version {}, this build needs version {SCHEMA_VERSION}; run `conduit migrate` (with this release) first",
            found.unwrap_or(0)
        ))),
    }
}

fn refuse_newer(version: i32) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::msg(format!(
            "the PostgreSQL database has schema version {version}, this build reads version {SCHEMA_VERSION}; run a Conduit release that matches it (a newer release migrated it)"
        )));
    }
    Ok(())
}
