//! Alarms published from this process (so their publish time is known to the microsecond)
//! and what the server and the FCM stand-in made of them.

use super::*;

/// Publishes one over-threshold reading per alarm detector, from this process, so the
/// publish time is known to the microsecond.
pub(crate) struct Alarms {
    pub(crate) client: AsyncClient,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) devices: u64,
    pub(crate) next: usize,
    pub(crate) ids: Vec<String>,
}

/// One alarm as published.
#[derive(Clone)]
pub(crate) struct Raised {
    pub(crate) detector: String,
    pub(crate) at_ms: i64,
    pub(crate) published_us: i64,
}

impl Alarms {
    pub(crate) async fn connect(port: u16, devices: u64, ids: Vec<String>) -> anyhow::Result<Alarms> {
        let mut opts = MqttOptions::new(format!("bench-alarms-{}", std::process::id()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(60));
        let (client, mut lp) = AsyncClient::new(opts, 100);
        let task = tokio::spawn(async move {
            loop {
                if lp.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Ok(Alarms { client, task, devices, next: 0, ids })
    }

    /// Raises the next alarm: one 900 mA reading, device time = publish time.
    pub(crate) async fn raise(&mut self) -> anyhow::Result<Raised> {
        let j = self.next;
        let detector = self.ids.get(j).context("ran out of alarm detectors")?.clone();
        self.next += 1;
        let (d, address) = alarm_place(j, self.devices);
        let published_us = now_us();
        let at_ms = published_us / 1000;
        let body = format!(
            r#"{{"ts":{at_ms},"seq":{published_us},"detectors":[{{"addr":{address},"leak":[900.0],"temp":[35.5,null,null,null]}}]}}"#
        );
        self.client.publish(format!("{PREFIX}/BENCH-{d}/telemetry"), QoS::AtLeastOnce, false, body).await?;
        Ok(Raised { detector, at_ms, published_us })
    }
}

impl Drop for Alarms {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// When the server received an alarm's reading and when it applied it, from its database.
pub(crate) async fn alarm_timeline(url: &str, alarm: &Raised) -> anyhow::Result<String> {
    let db = Database::connect(url).await?;
    let row = db
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT (extract(epoch FROM e.received_at) * 1e6)::bigint AS received, \
                    (extract(epoch FROM h.opened_at) * 1e6)::bigint AS applied \
             FROM hazards h JOIN events e ON e.episode_id IS NOT NULL AND e.detector_id = h.detector_id \
             WHERE h.detector_id = $1::uuid AND e.category = 'ALARM' LIMIT 1",
            [alarm.detector.clone().into()],
        ))
        .await?
        .context("no hazard")?;
    let received: i64 = row.try_get("", "received")?;
    let applied: i64 = row.try_get("", "applied")?;
    let ms = |us: i64| (us - alarm.published_us) as f64 / 1000.0;
    Ok(format!(", received after {:.0} ms, applied after {:.0} ms", ms(received), ms(applied)))
}

/// Push sends the FCM stand-in received for these alarms: (alarm index, latency ms).
pub(crate) fn push_latencies(fcm: &FcmStandIn, alarms: &[Raised]) -> Vec<(usize, f64)> {
    let by_detector: HashMap<&str, usize> = alarms.iter().enumerate().map(|(i, a)| (a.detector.as_str(), i)).collect();
    fcm.send_requests()
        .iter()
        .filter_map(|r| {
            let body = r.json();
            let data = &body["message"]["data"];
            if data["eventKind"] != "LEAK_ALARM" || !data["escalationLevel"].is_null() {
                return None;
            }
            let i = *by_detector.get(data["detectorId"].as_str()?)?;
            Some((i, (micros(r.received_at) - alarms[i].published_us) as f64 / 1000.0))
        })
        .collect()
}
