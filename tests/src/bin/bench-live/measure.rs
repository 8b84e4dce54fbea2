//! One measured step per subscriber count: the rig that raises alarms under load and the
//! figures it collects.

use super::*;

/// The figures of one subscriber count.
#[derive(Default)]
pub(crate) struct Step {
    pub(crate) subscribers: usize,
    pub(crate) skipped: Option<String>,
    pub(crate) open_s: f64,
    pub(crate) open_failed: usize,
    pub(crate) server_subscriptions: f64,
    pub(crate) rss_kib: u64,
    pub(crate) peak_kib: u64,
    pub(crate) kib_per_sub: f64,
    pub(crate) alarms: usize,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    pub(crate) sub_ms: Vec<f64>,
    /// The raw TCP fan-out floor measured just before the step.
    pub(crate) floor_ms: Vec<f64>,
    pub(crate) push_expected: u64,
    pub(crate) push_ms: Vec<f64>,
    pub(crate) stored_per_s: f64,
    pub(crate) server_cores: f64,
    pub(crate) bench_cores: f64,
    pub(crate) machine_busy: f64,
    pub(crate) closed: u64,
    pub(crate) errors: u64,
}

impl Step {
    pub(crate) fn missing(&self) -> u64 {
        self.expected - self.delivered.min(self.expected)
    }

    /// The row of the latency table.
    pub(crate) fn latency_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {:.1} / {:.1} | {:.1} | {:.1} | {:.1} | {}/{} | {:.1} | {:.1} |",
            self.subscribers,
            self.alarms,
            self.delivered,
            self.missing(),
            pct(&self.floor_ms, 0.5),
            pct(&self.floor_ms, 0.99),
            pct(&self.sub_ms, 0.5),
            pct(&self.sub_ms, 0.99),
            pct(&self.sub_ms, 1.0),
            self.push_ms.len(),
            self.push_expected,
            pct(&self.push_ms, 0.5),
            pct(&self.push_ms, 0.99),
        )
    }
}

/// Everything a step needs.
pub(crate) struct Rig<'a> {
    pub(crate) opts: &'a Opts,
    pub(crate) server: &'a mut Server,
    pub(crate) fcm: &'a FcmStandIn,
    pub(crate) alarms: Alarms,
    pub(crate) pool: Pool,
    pub(crate) rss0_kib: u64,
    /// The server's PostgreSQL database (where the slowest alarms' timeline is read).
    pub(crate) db_url: Option<String>,
}

impl Rig<'_> {
    /// Opens subscribers up to `n`, then raises alarms every `alarm_every` for `seconds`
    /// while the background load runs, and waits for every delivery and push.
    pub(crate) async fn step(&mut self, n: usize) -> anyhow::Result<Step> {
        let mut step = Step { subscribers: n, ..Step::default() };
        if self.pool.conns.len() > n {
            self.pool.shrink_to(n);
            eprintln!("  closed subscribers down to {n} (the RSS figure below then includes freed memory)");
        }
        if self.opts.floor {
            eprintln!("  raw TCP fan-out floor to {n} sockets …");
            step.floor_ms = fanout_floor(n).await.context("measuring the raw fan-out floor")?;
            eprintln!("    p50 {:.1} ms, p99 {:.1} ms", pct(&step.floor_ms, 0.5), pct(&step.floor_ms, 0.99));
        }
        eprintln!("  opening subscribers up to {n} …");
        let t = Instant::now();
        let (_, failed, why) = self.pool.grow_to(n).await;
        step.open_s = t.elapsed().as_secs_f64();
        step.open_failed = failed;
        if let Some(why) = why {
            eprintln!("  {failed} connections failed; the first: {why}");
        }
        let open = self.pool.conns.len();
        // Wait until the server has registered every subscription.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.server.check_alive()?;
            step.server_subscriptions = self.server.metric("sparkwatch_subscriptions_open").await.unwrap_or(0.0);
            if step.server_subscriptions as usize >= open || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "  {open} connected in {:.1} s ({:.0}/s), server reports {} subscriptions",
            step.open_s,
            (open + failed) as f64 / step.open_s.max(1e-3),
            step.server_subscriptions
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        step.rss_kib = self.server.stats().rss_kib;
        step.kib_per_sub = (step.rss_kib as f64 - self.rss0_kib as f64) / open.max(1) as f64;
        self.pool.take_seen();

        let alarms = self.opts.alarms_per_step();
        eprintln!("  raising {alarms} alarms, one every {} ms …", self.opts.alarm_every.as_millis());
        let (server0, own0, machine0) = (self.server.stats(), ProcStats::own(), machine_cpu());
        let stored0 = self.server.metric("sparkwatch_ingest_readings_stored_total").await?;
        let delivered0 = self.pool.tally.delivered.load(Ordering::Relaxed);
        let (closed0, errors0) =
            (self.pool.tally.closed.load(Ordering::Relaxed), self.pool.tally.errors.load(Ordering::Relaxed));
        let start = tokio::time::Instant::now();
        let mut raised = Vec::with_capacity(alarms);
        for k in 0..alarms {
            tokio::time::sleep_until(start + self.opts.alarm_every * k as u32).await;
            raised.push(self.alarms.raise().await?);
        }
        step.alarms = alarms;
        step.expected = (open * alarms) as u64;
        step.push_expected = (alarms * self.opts.latency_tokens) as u64;
        // Wait for every delivery, then every push (at most 30 s after the last alarm);
        // counting pushes parses the stand-in's log, so it is not done while deliveries run.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pool.tally.delivered.load(Ordering::Relaxed) - delivered0 < step.expected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        while (push_latencies(self.fcm, &raised).len() as u64) < step.push_expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let wall = start.elapsed().as_secs_f64();
        let (server1, own1, machine1) = (self.server.stats(), ProcStats::own(), machine_cpu());
        self.server.check_alive()?;
        let stored1 = self.server.metric("sparkwatch_ingest_readings_stored_total").await?;
        step.stored_per_s = (stored1 - stored0) / wall;
        step.server_cores = (server1.cpu_s - server0.cpu_s) / wall;
        step.peak_kib = server1.peak_kib;
        step.bench_cores = (own1.cpu_s - own0.cpu_s) / wall;
        step.machine_busy = (machine1.0 - machine0.0) / (machine1.1 - machine0.1).max(1e-9);
        step.closed = self.pool.tally.closed.load(Ordering::Relaxed) - closed0;
        step.errors = self.pool.tally.errors.load(Ordering::Relaxed) - errors0;

        let published: HashMap<i64, i64> = raised.iter().map(|a| (a.at_ms, a.published_us)).collect();
        let mut per_alarm: HashMap<i64, Vec<f64>> = HashMap::new();
        for seen in self.pool.take_seen() {
            let mut once = HashSet::new();
            for (at, received) in seen {
                if let Some(p) = published.get(&at)
                    && once.insert(at)
                {
                    let ms = (received - p) as f64 / 1000.0;
                    step.sub_ms.push(ms);
                    per_alarm.entry(at).or_default().push(ms);
                }
            }
        }
        // A p99 over many subscribers of few alarms is the slowest alarms': name them, with
        // when they were raised, so a stall on the ingest path shows as one slow alarm.
        let t0 = raised.first().map_or(0, |a| a.published_us);
        let by_at: HashMap<i64, &Raised> = raised.iter().map(|a| (a.at_ms, a)).collect();
        let mut slowest: Vec<(&Raised, f64)> = per_alarm
            .into_iter()
            .filter_map(|(at, mut ms)| {
                ms.sort_by(f64::total_cmp);
                Some((*by_at.get(&at)?, pct(&ms, 0.5)))
            })
            .collect();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        eprintln!(
            "  slowest alarms (median over subscribers; received = by the server's MQTT client, applied = its batch's transaction began):"
        );
        for (alarm, ms) in slowest.iter().take(3) {
            let when = (alarm.published_us - t0) as f64 / 1e6;
            let timeline = match &self.db_url {
                Some(url) => alarm_timeline(url, alarm).await.unwrap_or_else(|e| format!("({e})")),
                None => String::new(),
            };
            eprintln!("    +{when:.1} s: delivered after {ms:.0} ms{timeline}");
        }
        step.delivered = step.sub_ms.len() as u64;
        step.sub_ms.sort_by(f64::total_cmp);
        step.push_ms = push_latencies(self.fcm, &raised).into_iter().map(|(_, ms)| ms).collect();
        step.push_ms.sort_by(f64::total_cmp);
        eprintln!(
            "  subscribers | alarms | deliveries | missing | raw TCP floor p50 / p99 ms | → subscriber p50, p99, max ms | pushes | → push p50, p99 ms"
        );
        eprintln!("  {} ({} closed, {} errors)", step.latency_row(), step.closed, step.errors);
        if step.closed > 0 || step.errors > 0 {
            let codes = self.pool.tally.close_codes.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let first = self.pool.tally.first_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            eprintln!("  closes so far: {codes:?}; first error message: {first:?}");
        }
        Ok(step)
    }

    /// Registers phones up to `--push-tokens`, raises one alarm and times the sends.
    pub(crate) async fn dispatch(&mut self, manager: &str) -> anyhow::Result<Dispatch> {
        let total = self.opts.push_tokens;
        eprintln!("push dispatch: closing subscribers, registering {total} phones for the manager …");
        self.pool.shrink_to(0);
        register_tokens(self.server, manager, self.opts.latency_tokens, total).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let raised = [self.alarms.raise().await?];
        let deadline = Instant::now() + Duration::from_secs(300);
        let (mut last_count, mut last_progress) = (0, Instant::now());
        let lat = loop {
            // The end is taken from the stand-in's receive times; polling only notices it.
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.server.check_alive()?;
            let lat = push_latencies(self.fcm, &raised);
            if lat.len() != last_count {
                (last_count, last_progress) = (lat.len(), Instant::now());
            }
            if lat.len() >= total || Instant::now() > deadline || last_progress.elapsed() > Duration::from_secs(30) {
                break lat;
            }
        };
        let mut ms: Vec<f64> = lat.into_iter().map(|(_, ms)| ms).collect();
        ms.sort_by(f64::total_cmp);
        let d = Dispatch {
            expected: total,
            received: ms.len(),
            first_ms: ms.first().copied().unwrap_or(f64::NAN),
            last_ms: ms.last().copied().unwrap_or(f64::NAN),
        };
        eprintln!(
            "  {} of {} sends, first after {:.0} ms, last after {:.0} ms → {:.0} sends/s",
            d.received,
            d.expected,
            d.first_ms,
            d.last_ms,
            d.rate()
        );
        Ok(d)
    }
}

pub(crate) struct Dispatch {
    pub(crate) expected: usize,
    pub(crate) received: usize,
    pub(crate) first_ms: f64,
    pub(crate) last_ms: f64,
}

impl Dispatch {
    pub(crate) fn rate(&self) -> f64 {
        self.received as f64 / (self.last_ms / 1000.0)
    }
}

// ---------------------------------------------------------------------------------------
