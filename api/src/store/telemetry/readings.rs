//! Raw readings: batched inserts that deduplicate, range and latest queries, the retention
//! purge, and the stored-value codec.

use chrono::{DateTime, DurationRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};
use sparkwatch_domain::ids::{DetectorId, TenantId};
use sparkwatch_domain::reading::Reading;
use sparkwatch_entity::reading;
use uuid::Uuid;

use super::MAX_PARAM_BYTES;

/// A reading row to store.
#[derive(Clone, Debug)]
pub struct NewReading {
    /// Tenant.
    pub tenant: TenantId,
    /// Detector.
    pub detector: DetectorId,
    /// Device time.
    pub at: DateTime<Utc>,
    /// Ingest time.
    pub received_at: DateTime<Utc>,
    /// The values as compact JSON.
    pub values: String,
}

/// Stores readings in multi-row inserts; rows already stored (same detector and device
/// time: a redelivery) are skipped. Returns the keys of the rows that were new, so that only
/// those are evaluated — one statement both stores and deduplicates.
pub async fn insert_readings<C: ConnectionTrait>(
    db: &C,
    rows: &[NewReading],
) -> Result<std::collections::HashSet<(DetectorId, DateTime<Utc>)>, DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        return insert_readings_postgres(db, rows).await;
    }
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    // 5 parameters per row; stay far below SQLite's parameter limit.
    for chunk in rows.chunks(1000) {
        let models = chunk.iter().map(|r| reading::ActiveModel {
            tenant_id: Set(r.tenant.as_uuid()),
            detector_id: Set(r.detector.as_uuid()),
            at: Set(r.at),
            received_at: Set(r.received_at),
            values: Set(r.values.clone()),
        });
        let res = reading::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([reading::Column::DetectorId, reading::Column::At]).do_nothing().to_owned(),
            )
            .exec_with_returning(db)
            .await;
        match res {
            Ok(models) => inserted.extend(models.into_iter().map(|m| (DetectorId::from(m.detector_id), m.at))),
            Err(DbErr::RecordNotInserted) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(inserted)
}

/// PostgreSQL: the batch as five array parameters (binary on the wire) expanded by
/// `unnest`, in slices of at most [`MAX_PARAM_BYTES`]. The statement text never changes with
/// the batch size, so it is prepared once per connection; a multi-row VALUES list would be a
/// new 5000-parameter statement to parse and plan for every batch size (measured: that, not
/// the insert, capped ingestion at ~5k readings/s). Arrays instead of one JSON parameter
/// carry a reading in about half the bytes and spare PostgreSQL parsing JSON: half the
/// round trips per batch (BENCHMARKS.md, ingestion run 8).
async fn insert_readings_postgres<C: ConnectionTrait>(
    db: &C,
    rows: &[NewReading],
) -> Result<std::collections::HashSet<(DetectorId, DateTime<Utc>)>, DbErr> {
    const SQL: &str = "INSERT INTO readings (tenant_id, detector_id, at, received_at, \"values\") \
        SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::text[]) \
        ON CONFLICT (detector_id, at) DO NOTHING RETURNING detector_id, at";
    // Two UUIDs, two timestamps, array element headers (4 bytes each) and the values text.
    let size = |r: &NewReading| 16 * 2 + 8 * 2 + 4 * 5 + r.values.len();
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    let mut rest = rows;
    while !rest.is_empty() {
        let mut bytes = 0;
        let n = rest.iter().take_while(|r| {
            bytes += size(r);
            bytes <= MAX_PARAM_BYTES
        });
        let n = n.count().max(1);
        let (slice, tail) = rest.split_at(n);
        rest = tail;
        let values: [sea_orm::Value; 5] = [
            slice.iter().map(|r| r.tenant.as_uuid()).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.detector.as_uuid()).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.at).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.received_at).collect::<Vec<_>>().into(),
            slice.iter().map(|r| r.values.clone()).collect::<Vec<_>>().into(),
        ];
        let stmt = sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, SQL, values);
        for row in db.query_all_raw(stmt).await? {
            let detector: Uuid = row.try_get("", "detector_id")?;
            let at: DateTime<Utc> = row.try_get("", "at")?;
            inserted.insert((DetectorId::from(detector), at));
        }
    }
    Ok(inserted)
}

/// The stored values of the readings with these keys `(detector, device time)`, keyed at
/// microseconds ([`micros`]). For telling a redelivery (same values) from a different
/// reading at the same device time. A key set is small (readings an insert did not store),
/// so this asks for the keys' detectors within the keys' time span and picks in memory:
/// comparing timestamps for equality would depend on each backend's precision.
pub async fn stored_values<C: ConnectionTrait>(
    db: &C,
    keys: &[(DetectorId, DateTime<Utc>)],
) -> Result<std::collections::HashMap<(DetectorId, DateTime<Utc>), String>, DbErr> {
    let wanted: std::collections::HashSet<(DetectorId, DateTime<Utc>)> =
        keys.iter().map(|(d, at)| (*d, micros(*at))).collect();
    let mut found = std::collections::HashMap::with_capacity(wanted.len());
    let mut detectors: Vec<Uuid> = keys.iter().map(|(d, _)| d.as_uuid()).collect();
    detectors.sort_unstable();
    detectors.dedup();
    let (Some(from), Some(to)) = (keys.iter().map(|k| k.1).min(), keys.iter().map(|k| k.1).max()) else {
        return Ok(found);
    };
    for chunk in detectors.chunks(500) {
        let rows = reading::Entity::find()
            .filter(reading::Column::DetectorId.is_in(chunk.iter().copied()))
            .filter(reading::Column::At.gte(micros(from)))
            .filter(reading::Column::At.lte(to))
            .all(db)
            .await?;
        for r in rows {
            let key = (DetectorId::from(r.detector_id), micros(r.at));
            if wanted.contains(&key) {
                found.insert(key, r.values);
            }
        }
    }
    Ok(found)
}

/// Stored readings of a detector in `[from, to)`, oldest first, at most `limit`.
pub async fn readings<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<(DateTime<Utc>, String)>, DbErr> {
    Ok(reading::Entity::find()
        .filter(reading::Column::DetectorId.eq(detector.as_uuid()))
        .filter(reading::Column::At.gte(from))
        .filter(reading::Column::At.lt(to))
        .order_by_asc(reading::Column::At)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(|r| (r.at, r.values))
        .collect())
}

/// The newest stored reading of a detector.
pub async fn latest_reading<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
) -> Result<Option<(DateTime<Utc>, String)>, DbErr> {
    Ok(reading::Entity::find()
        .filter(reading::Column::DetectorId.eq(detector.as_uuid()))
        .order_by_desc(reading::Column::At)
        .one(db)
        .await?
        .map(|r| (r.at, r.values)))
}

/// Deletes raw readings older than `before` (retention; rollups are kept), at most `chunk`
/// rows per statement, and returns how many went. In chunks because one statement over
/// months of readings held SQLite's single writer (and with it ingestion) for its whole run;
/// between chunks the pipeline's transactions get their turn.
pub async fn prune_readings<C: ConnectionTrait>(db: &C, before: DateTime<Utc>, chunk: u64) -> Result<u64, DbErr> {
    let chunk = Ord::max(chunk, 1);
    let mut total = 0;
    loop {
        let oldest = reading::Entity::find()
            .select_only()
            .columns([reading::Column::DetectorId, reading::Column::At])
            .filter(reading::Column::At.lt(before))
            .limit(chunk)
            .into_query();
        let key = Expr::tuple([Expr::col(reading::Column::DetectorId), Expr::col(reading::Column::At)]);
        let deleted = reading::Entity::delete_many().filter(key.in_subquery(oldest)).exec(db).await?.rows_affected;
        total += deleted;
        if deleted < chunk {
            return Ok(total);
        }
    }
}

/// A reading's values as stored in `readings.values`, borrowed for writing: serialised
/// straight into the text (through a `json!` value it cost eight allocations per reading).
/// Keys in this order, as `json!`'s sorted map wrote them before.
#[derive(serde::Serialize)]
struct StoredValues<'a> {
    di: Option<u16>,
    #[serde(rename = "do")]
    digital_out: Option<u16>,
    i: &'a [Option<f64>],
    l: &'a [Option<f64>],
    t: &'a [Option<f64>],
    u: &'a [Option<f64>],
}

/// Compact JSON of a reading's values, as stored in `readings.values`.
pub fn values_json(r: &Reading) -> String {
    let values = StoredValues {
        di: r.digital_in,
        digital_out: r.digital_out,
        i: &r.current_a,
        l: &r.leak_ma,
        t: &r.temp_c,
        u: &r.voltage_v,
    };
    // Numbers and option arrays cannot fail to serialise.
    serde_json::to_string(&values).unwrap_or_default()
}

/// Parses [`values_json`] back into a reading at `at`.
pub fn reading_from_json(at: DateTime<Utc>, json: &str) -> Reading {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let list = |k: &str| -> Vec<Option<f64>> {
        v[k].as_array().map(|a| a.iter().map(serde_json::Value::as_f64).collect()).unwrap_or_default()
    };
    let bits = |k: &str| v[k].as_u64().and_then(|b| u16::try_from(b).ok());
    Reading {
        at,
        leak_ma: list("l"),
        temp_c: list("t"),
        voltage_v: list("u"),
        current_a: list("i"),
        digital_in: bits("di"),
        digital_out: bits("do"),
    }
}

/// A device time at the store's precision: PostgreSQL keeps microseconds, so readings are
/// keyed — and stored keys compared — at that precision on every backend.
pub fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::microseconds(1)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_keep_their_format_and_read_back() {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let r = Reading {
            at,
            leak_ma: vec![Some(12.5), None],
            temp_c: vec![Some(41.0)],
            voltage_v: vec![Some(220.1), Some(219.9), Some(221.0)],
            current_a: Vec::new(),
            digital_in: None,
            digital_out: Some(3),
        };
        let json = values_json(&r);
        assert_eq!(json, r#"{"di":null,"do":3,"i":[],"l":[12.5,null],"t":[41.0],"u":[220.1,219.9,221.0]}"#);
        assert_eq!(reading_from_json(at, &json), r);
    }
}
