//! Prometheus metrics, registered once and shared by the HTTP surface and ingestion.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric the server exports under the `sparkwatch_` prefix.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// GraphQL operations by transport and outcome.
    pub graphql_requests: IntCounterVec,
    /// GraphQL execution time by transport.
    pub graphql_seconds: HistogramVec,
    /// Device messages received, by topic kind.
    pub messages: IntCounterVec,
    /// Rejected device input (whole messages or detector entries), by reason.
    pub rejected: IntCounterVec,
    /// Duplicate deliveries ignored.
    pub duplicates: IntCounter,
    /// Readings stored.
    pub readings_stored: IntCounter,
    /// Time to process one ingestion batch.
    pub batch_seconds: Histogram,
    /// Time spent in each stage of ingestion, by stage. Per batch: `queued` (its first
    /// message, from receipt until the validator took the batch), `validate`, `handover`
    /// (validated until the store task took it), `alarm_path`. Per insert of quiet readings
    /// (which may merge batches): `lane`, then `settle`. Shows where publish → hazard time
    /// goes.
    pub stage_seconds: HistogramVec,
    /// Messages waiting in the ingestion queue.
    pub queue_depth: IntGauge,
    /// Messages the MQTT subscriber holds because the ingestion queue is full (at most
    /// 1,000; then it stops reading and the broker buffers).
    pub held: IntGauge,
    /// Acknowledgements that found the MQTT client's request channel full and were written
    /// later, in order, by the subscriber's forwarder.
    pub acks_deferred: IntCounter,
    /// 1 while ingestion cannot store what it received (something is being retried).
    pub ingest_failing: IntGauge,
    /// Failed attempts to store ingested input, by stage; each is retried.
    pub ingest_failures: IntCounterVec,
    /// Reconnections to the MQTT broker that ingestion asked for, by reason.
    pub ingest_reconnects: IntCounterVec,
    /// Episodes opened, by kind.
    pub episodes_opened: IntCounterVec,
    /// Modbus polls by outcome.
    pub modbus_polls: IntCounterVec,
    /// Bus messages dropped because Redis was unreachable or too slow.
    pub bus_dropped: IntCounter,
    /// Open GraphQL subscriptions.
    pub subscriptions: IntGauge,
    /// Running subscription executions (identical subscriptions share one).
    pub subscription_executions: IntGauge,
    /// Subscriptions ended because their client fell too far behind.
    pub slow_consumers: IntCounter,
    /// Push delivery attempts by platform and outcome.
    pub push_attempts: IntCounterVec,
    /// Connections refused over a connection cap (`total` or `per_address`).
    pub connections_refused: IntCounterVec,
    /// Dead letters not stored because their device had sent too many in the minute.
    pub dead_letters_dropped: IntCounter,
    /// Completed passes of the background jobs (`push_delivery`, `reminders`,
    /// `ingest_housekeeping`), failed ones included: evidence that a job ran past a point.
    pub job_passes: IntCounterVec,
}

/// Buckets of [`Metrics::stage_seconds`]: a stage takes from well under a millisecond (an
/// idle hand-over) to seconds (a retried transaction); the default buckets start at 5 ms,
/// above most of publish → hazard.
const STAGE_BUCKETS: [f64; 14] = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0];

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new_custom(Some("sparkwatch".into()), None)?;
        let m = Metrics {
            graphql_requests: IntCounterVec::new(
                Opts::new("graphql_requests_total", "GraphQL operations by transport and outcome"),
                &["transport", "outcome"],
            )?,
            graphql_seconds: HistogramVec::new(
                HistogramOpts::new("graphql_request_seconds", "Time to execute a GraphQL request"),
                &["transport"],
            )?,
            messages: IntCounterVec::new(
                Opts::new("ingest_messages_total", "Device messages received by topic"),
                &["topic"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new("ingest_rejected_total", "Rejected device input by reason (kept in the dead-letter log)"),
                &["reason"],
            )?,
            duplicates: IntCounter::new("ingest_duplicates_total", "Redelivered device messages ignored")?,
            readings_stored: IntCounter::new("ingest_readings_stored_total", "Readings stored")?,
            batch_seconds: Histogram::with_opts(HistogramOpts::new(
                "ingest_batch_seconds",
                "Time to process one ingestion batch",
            ))?,
            stage_seconds: HistogramVec::new(
                HistogramOpts::new("ingest_stage_seconds", "Time one ingestion batch spent in each stage")
                    .buckets(STAGE_BUCKETS.to_vec()),
                &["stage"],
            )?,
            queue_depth: IntGauge::new("ingest_queue_depth", "Device messages waiting to be processed")?,
            held: IntGauge::new(
                "ingest_held",
                "Device messages the MQTT subscriber holds while the ingestion queue is full",
            )?,
            acks_deferred: IntCounter::new(
                "ingest_acks_deferred_total",
                "MQTT acknowledgements written later because the client's request channel was full",
            )?,
            ingest_failing: IntGauge::new(
                "ingest_failing",
                "1 while ingestion cannot store what it received (the database fails; it is being retried)",
            )?,
            ingest_failures: IntCounterVec::new(
                Opts::new("ingest_failures_total", "Failed attempts to store ingested input, by stage (each retried)"),
                &["stage"],
            )?,
            ingest_reconnects: IntCounterVec::new(
                Opts::new("ingest_reconnects_total", "Reconnections to the MQTT broker forced by ingestion, by reason"),
                &["reason"],
            )?,
            episodes_opened: IntCounterVec::new(
                Opts::new("episodes_opened_total", "Alarm and fault episodes opened"),
                &["kind"],
            )?,
            modbus_polls: IntCounterVec::new(Opts::new("modbus_polls_total", "Modbus polls by outcome"), &["outcome"])?,
            bus_dropped: IntCounter::new("bus_dropped_total", "Bus messages dropped (Redis unreachable or too slow)")?,
            subscriptions: IntGauge::new("subscriptions_open", "Open GraphQL subscriptions")?,
            subscription_executions: IntGauge::new(
                "subscription_executions",
                "Running subscription executions (identical subscriptions of callers with the same access share one)",
            )?,
            slow_consumers: IntCounter::new(
                "subscriptions_slow_consumer_total",
                "Subscriptions ended because the client fell too far behind",
            )?,
            push_attempts: IntCounterVec::new(
                Opts::new("push_attempts_total", "Push delivery attempts by platform and outcome"),
                &["platform", "outcome"],
            )?,
            connections_refused: IntCounterVec::new(
                Opts::new("http_connections_refused_total", "Connections refused over a connection cap"),
                &["cap"],
            )?,
            dead_letters_dropped: IntCounter::new(
                "dead_letters_dropped_total",
                "Rejected messages not stored because their device sent too many in the minute",
            )?,
            job_passes: IntCounterVec::new(
                Opts::new("job_passes_total", "Completed passes of the background jobs (failed ones included)"),
                &["job"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.graphql_requests.clone()))?;
        m.registry.register(Box::new(m.graphql_seconds.clone()))?;
        m.registry.register(Box::new(m.messages.clone()))?;
        m.registry.register(Box::new(m.rejected.clone()))?;
        m.registry.register(Box::new(m.duplicates.clone()))?;
        m.registry.register(Box::new(m.readings_stored.clone()))?;
        m.registry.register(Box::new(m.batch_seconds.clone()))?;
        m.registry.register(Box::new(m.stage_seconds.clone()))?;
        m.registry.register(Box::new(m.queue_depth.clone()))?;
        m.registry.register(Box::new(m.held.clone()))?;
        m.registry.register(Box::new(m.acks_deferred.clone()))?;
        m.registry.register(Box::new(m.ingest_failing.clone()))?;
        m.registry.register(Box::new(m.ingest_failures.clone()))?;
        m.registry.register(Box::new(m.ingest_reconnects.clone()))?;
        m.registry.register(Box::new(m.episodes_opened.clone()))?;
        m.registry.register(Box::new(m.modbus_polls.clone()))?;
        m.registry.register(Box::new(m.bus_dropped.clone()))?;
        m.registry.register(Box::new(m.subscriptions.clone()))?;
        m.registry.register(Box::new(m.subscription_executions.clone()))?;
        m.registry.register(Box::new(m.slow_consumers.clone()))?;
        m.registry.register(Box::new(m.push_attempts.clone()))?;
        m.registry.register(Box::new(m.connections_refused.clone()))?;
        m.registry.register(Box::new(m.dead_letters_dropped.clone()))?;
        m.registry.register(Box::new(m.job_passes.clone()))?;
        Ok(m)
    }
}
