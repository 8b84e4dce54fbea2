//! Persistence: SeaORM queries and the mapping between rows and domain types.
//!
//! Every query that reads tenant data takes the tenant id and filters by it; scope filters
//! (project lists) are applied here too, in SQL, so that counts and pages agree.
//! Functions take any `ConnectionTrait` so services can run several in one transaction.
//! [`latest`] is the one part outside the database: the latest value per detector, in process
//! or in Redis.

pub mod access;
pub mod attachments;
pub mod commands;
pub mod field;
pub mod hazards;
pub mod identity;
pub mod latest;
pub mod notify;
pub mod oplog;
pub mod patrol;
pub mod registration;
pub mod reports;
pub mod sites;
pub mod telemetry;
pub mod tenants;
pub mod thresholds;
pub mod workorders;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Select, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use sparkwatch_domain::access::ProjectScope;
use sparkwatch_migration::{Migrator, MigratorTrait};
use uuid::Uuid;

/// Connections to a SQLite file (one writer at a time; a small pool avoids lock convoys).
const SQLITE_CONNECTIONS: u32 = 4;
/// Connections of the ingestion pool: the alarm path's transaction, the readings lane's two
/// inserts, the validator's look-ups, the periodic write-back.
const INGEST_CONNECTIONS: u32 = 5;

/// The database behind the service layer (SQLite or PostgreSQL, chosen by URL).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// A separate pool for ingestion (see [`Store::ingestion`]).
    ingestion: Option<DatabaseConnection>,
    /// Statements run through `db` (see [`Store::statements`]).
    statements: Arc<AtomicU64>,
}

/// Creates a new SQLite database file readable and writable by its owner only (0600)
/// before SQLite opens it: SQLite would create it with the umask's mode (0644 by default),
/// and gives its WAL and shared-memory files the database file's mode. An existing file
/// keeps its mode; PostgreSQL URLs and in-memory databases are left alone.
fn create_private_sqlite_file(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) else { return Ok(()) };
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path.starts_with(":memory:") || std::path::Path::new(path).exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot create the database file {path}: {e}")),
    }
}

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> anyhow::Result<Store> {
        create_private_sqlite_file(url)?;
        let mut store = Store::connect(url).await?;
        store.migrate().await?;
        store.ingestion = Some(Store::connect_sized(url, Some(INGEST_CONNECTIONS)).await?.db);
        Ok(store)
    }

    /// The store ingestion writes through: a second, small pool on the same database, so a
    /// burst of API work (a thousand phones signing in at once) waits for its own
    /// connections and never holds up storing readings — which the broker would answer by
    /// queueing (see BENCHMARKS.md, bench-live run 4).
    pub fn ingestion(&self) -> Store {
        let db = self.ingestion.clone().unwrap_or_else(|| self.db.clone());
        Store { db, ingestion: None, statements: Arc::default() }
    }

    /// Connects without migrating.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        Store::connect_sized(url, None).await
    }

    async fn connect_sized(url: &str, connections: Option<u32>) -> anyhow::Result<Store> {
        let mut options = ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false).connect_timeout(Duration::from_secs(10)).acquire_timeout(Duration::from_secs(10));
        if let Some(n) = connections {
            options.max_connections(n);
        }
        let sqlite_connections = connections.unwrap_or(SQLITE_CONNECTIONS);
        if url.starts_with("sqlite:") {
            // WAL lets readers run beside the one writer. It is a property of the file, set
            // once here on a lone connection: `journal_mode` needs an exclusive lock that
            // SQLite does not wait for, so setting it as each pooled connection opens failed
            // now and then with "database is locked" when another connection was writing.
            let mut first = ConnectOptions::new(url.to_owned());
            first.sqlx_logging(false).max_connections(1).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal).busy_timeout(Duration::from_secs(30))
            });
            Database::connect(first)
                .await
                .with_context(|| format!("cannot open the database {}", crate::config::redact_url(url)))?
                .close()
                .await
                .context("closing the set-up connection")?;
            // A small pool avoids lock convoys; these pragmas are per connection.
            options
                .max_connections(sqlite_connections)
                .min_connections(sqlite_connections)
                .map_sqlx_sqlite_opts(|o| o.foreign_keys(true).busy_timeout(Duration::from_secs(30)));
        }
        let mut db = Database::connect(options)
            .await
            .with_context(|| format!("cannot open the database {}", crate::config::redact_url(url)))?;
        let statements = Arc::<AtomicU64>::default();
        let counter = statements.clone();
        db.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        if url.starts_with("sqlite:") {
            // Open every pooled connection now, one after the other: connections opening at
            // the same moment on a WAL file can meet "database is locked" while one of them
            // initialises the shared WAL index (seen when the first requests and the
            // background jobs started together).
            let pool = db.get_sqlite_connection_pool();
            let mut held = Vec::with_capacity(sqlite_connections as usize);
            for _ in 0..sqlite_connections {
                held.push(pool.acquire().await.context("opening the SQLite connections")?);
            }
        }
        Ok(Store { db, ingestion: None, statements })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        Migrator::up(&self.db, None).await.context("applying database migrations")
    }

    /// How many statements the pool has run since it opened (transactions' included): lets
    /// tests prove that a list costs a constant number of queries whatever its length.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// The connection pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a transaction that writes. On SQLite it takes the write lock at `BEGIN`
    /// (`BEGIN IMMEDIATE`): a deferred transaction that has read and then writes after
    /// another connection committed fails at once with "database is locked"
    /// (`SQLITE_BUSY_SNAPSHOT`, which the busy timeout cannot help), while an immediate
    /// one waits its turn behind the busy timeout. PostgreSQL ignores the mode.
    pub async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.db.ping().await
    }
}

/// A new time-ordered id.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// A page request: at most `first` items after the cursor `after` (an id).
#[derive(Clone, Copy, Debug)]
pub struct PageRequest {
    /// Page size.
    pub first: u64,
    /// Exclusive lower bound.
    pub after: Option<Uuid>,
}

/// One page of results in id order.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Whether more items follow.
    pub has_next: bool,
    /// Whether items precede (a cursor was given).
    pub has_previous: bool,
    /// Number of items matching the filter, across all pages.
    pub total: u64,
}

impl<T> Page<T> {
    /// Maps the items, keeping the paging facts.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            has_next: self.has_next,
            has_previous: self.has_previous,
            total: self.total,
        }
    }
}

/// Runs `select` as a keyset page ordered by the (time-ordered) id column.
pub async fn page<E, C>(db: &C, select: Select<E>, id: E::Column, req: PageRequest) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: Send + Sync,
    C: ConnectionTrait,
{
    keyset_page(db, select, id, req, false).await
}

/// [`page`] newest first: descending by the time-ordered id; `after` is the last id seen.
pub async fn page_desc<E, C>(
    db: &C,
    select: Select<E>,
    id: E::Column,
    req: PageRequest,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: Send + Sync,
    C: ConnectionTrait,
{
    keyset_page(db, select, id, req, true).await
}

async fn keyset_page<E, C>(
    db: &C,
    select: Select<E>,
    id: E::Column,
    req: PageRequest,
    newest_first: bool,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: Send + Sync,
    C: ConnectionTrait,
{
    let total = select.clone().count(db).await?;
    let mut q = if newest_first { select.order_by_desc(id) } else { select.order_by_asc(id) };
    if let Some(after) = req.after {
        q = q.filter(if newest_first { id.lt(after) } else { id.gt(after) });
    }
    fetch_page(db, q, req.first, req.after.is_some(), total).await
}

/// Reads one page of an ordered, cursor-filtered `select`: one row more than `first` tells
/// whether another page follows.
pub(crate) async fn fetch_page<E, C>(
    db: &C,
    ordered: Select<E>,
    first: u64,
    has_previous: bool,
    total: u64,
) -> Result<Page<E::Model>, DbErr>
where
    E: EntityTrait,
    E::Model: Send + Sync,
    C: ConnectionTrait,
{
    let mut items = ordered.limit(first + 1).all(db).await?;
    let has_next = items.len() as u64 > first;
    items.truncate(first as usize);
    Ok(Page { items, has_next, has_previous, total })
}

/// Restricts `select` to the projects in `scope` through its project-id column.
pub fn in_scope<E: EntityTrait>(select: Select<E>, project_col: E::Column, scope: &ProjectScope) -> Select<E> {
    match scope {
        ProjectScope::All => select,
        ProjectScope::Only(ids) => select.filter(project_col.is_in(ids.iter().map(|p| p.as_uuid()))),
    }
}
