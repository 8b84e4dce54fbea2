//! Per-minute, hour and day aggregates of the readings' channels.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder};
use sparkwatch_domain::ids::DetectorId;
use sparkwatch_entity::reading_rollup;

/// One rollup cell to merge.
#[derive(Clone, Debug)]
pub struct Rollup {
    /// Detector.
    pub detector: DetectorId,
    /// `minute`, `hour` or `day`.
    pub bucket: &'static str,
    /// Bucket start.
    pub start: DateTime<Utc>,
    /// Channel code.
    pub channel: String,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Sum.
    pub sum: f64,
    /// Count.
    pub count: i64,
}

/// Merges rollup cells into the stored ones (min of mins, max of maxes, sums added).
pub async fn merge_rollups<C: ConnectionTrait>(db: &C, cells: &[Rollup]) -> Result<(), DbErr> {
    use reading_rollup::Column as R;
    // Chunks of 100: every full chunk is the same statement, prepared once per connection.
    for chunk in cells.chunks(100) {
        let models = chunk.iter().map(|c| reading_rollup::ActiveModel {
            detector_id: Set(c.detector.as_uuid()),
            bucket: Set(c.bucket.to_owned()),
            bucket_start: Set(c.start),
            channel: Set(c.channel.clone()),
            min: Set(c.min),
            max: Set(c.max),
            sum: Set(c.sum),
            count: Set(c.count),
        });
        let table = "reading_rollups";
        reading_rollup::Entity::insert_many(models)
            .on_conflict(
                OnConflict::columns([R::DetectorId, R::Bucket, R::BucketStart, R::Channel])
                    .value(
                        R::Min,
                        Expr::cust(format!(
                            "CASE WHEN {table}.min < excluded.min THEN {table}.min ELSE excluded.min END"
                        )),
                    )
                    .value(
                        R::Max,
                        Expr::cust(format!(
                            "CASE WHEN {table}.max > excluded.max THEN {table}.max ELSE excluded.max END"
                        )),
                    )
                    .value(R::Sum, Expr::cust(format!("{table}.sum + excluded.sum")))
                    .value(R::Count, Expr::cust(format!("{table}.count + excluded.count")))
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Rollup cells of a detector in a range.
pub async fn rollups<C: ConnectionTrait>(
    db: &C,
    detector: DetectorId,
    bucket: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Rollup>, DbErr> {
    Ok(reading_rollup::Entity::find()
        .filter(reading_rollup::Column::DetectorId.eq(detector.as_uuid()))
        .filter(reading_rollup::Column::Bucket.eq(bucket))
        .filter(reading_rollup::Column::BucketStart.gte(from))
        .filter(reading_rollup::Column::BucketStart.lt(to))
        .order_by_asc(reading_rollup::Column::BucketStart)
        .all(db)
        .await?
        .into_iter()
        .map(|m| Rollup {
            detector,
            bucket: match m.bucket.as_str() {
                "hour" => "hour",
                "day" => "day",
                _ => "minute",
            },
            start: m.bucket_start,
            channel: m.channel,
            min: m.min,
            max: m.max,
            sum: m.sum,
            count: m.count,
        })
        .collect())
}
