//! Simulated MQTT devices: each produces the device contract's telemetry, event and status
//! messages for one scenario, tick by tick. Pure apart from the time passed in, so tests can
//! drive them deterministically.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// What a simulated device does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Ordinary values with noise.
    Normal,
    /// Leakage creeping up ~2 mA per tick through the pre-alarm and alarm levels, then repaired.
    LeakCreep,
    /// A cabinet heating from 40 °C past 85 °C, then cooling down.
    Overheat,
    /// Temperature sensor 2 goes open circuit (device event), later repaired.
    SensorOpen,
    /// The device goes silent (last will `{"online": false}`) and comes back.
    Offline,
    /// Leakage flapping around the 300 mA set-point (hysteresis must hold).
    Flapping,
    /// Every few messages is malformed (not JSON, unknown address, out-of-range value).
    Malformed,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 7] = [
        Scenario::Normal,
        Scenario::LeakCreep,
        Scenario::Overheat,
        Scenario::SensorOpen,
        Scenario::Offline,
        Scenario::Flapping,
        Scenario::Malformed,
    ];

    /// The name used on the command line (`leak-creep`).
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::Normal => "normal",
            Scenario::LeakCreep => "leak-creep",
            Scenario::Overheat => "overheat",
            Scenario::SensorOpen => "sensor-open",
            Scenario::Offline => "offline",
            Scenario::Flapping => "flapping",
            Scenario::Malformed => "malformed",
        }
    }

    /// Parses [`Scenario::name`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One message to publish: topic suffix (`telemetry`, `event`, `status`) and payload.
#[derive(Clone, Debug, PartialEq)]
pub struct SimMessage {
    /// `telemetry`, `event` or `status`.
    pub suffix: &'static str,
    /// JSON (or deliberately broken) payload.
    pub payload: String,
}

/// A simulated MQTT device with `detectors` detectors at addresses 1..=n.
#[derive(Clone, Debug)]
pub struct SimDevice {
    /// Serial (the topic segment).
    pub serial: String,
    /// Number of detectors.
    pub detectors: u8,
    /// Behaviour.
    pub scenario: Scenario,
    /// Its MQTT secret (DEVICE-PROTOCOL.md §3), when it connects to a broker that checks them.
    pub secret: Option<String>,
    tick: u64,
    seed: u64,
}

/// Length of one scenario cycle in ticks; scenarios repeat so a demo keeps producing alarms.
pub const CYCLE: u64 = 120;

impl SimDevice {
    /// A device; `seed` varies the noise between devices.
    pub fn new(serial: impl Into<String>, detectors: u8, scenario: Scenario, seed: u64) -> Self {
        SimDevice {
            serial: serial.into(),
            detectors: detectors.max(1),
            scenario,
            secret: None,
            tick: 0,
            seed: seed.wrapping_mul(2654435761) | 1,
        }
    }

    /// Noise in [-1, 1), from a small xorshift generator (no extra dependency, reproducible).
    fn noise(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed % 2000) as f64 / 1000.0 - 1.0
    }

    fn round1(v: f64) -> f64 {
        (v * 10.0).round() / 10.0
    }

    /// The messages of the next tick at device time `now`.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<SimMessage> {
        let t = self.tick % CYCLE;
        self.tick += 1;
        let ts = now.timestamp_millis();
        let mut out = Vec::new();
        if self.tick == 1 {
            out.push(SimMessage { suffix: "status", payload: json!({"online": true}).to_string() });
        }
        match self.scenario {
            Scenario::Offline if (40..80).contains(&t) => {
                if t == 40 {
                    out.push(SimMessage { suffix: "status", payload: json!({"online": false}).to_string() });
                }
                return out;
            }
            Scenario::Offline if t == 80 => {
                out.push(SimMessage { suffix: "status", payload: json!({"online": true}).to_string() });
            }
            Scenario::SensorOpen if t == 10 => out.push(SimMessage {
                suffix: "event",
                payload: json!({"ts": ts, "addr": 1, "type": "sensor_open", "ch": 2}).to_string(),
            }),
            Scenario::SensorOpen if t == 70 => out.push(SimMessage {
                suffix: "event",
                payload: json!({"ts": ts, "addr": 1, "type": "recovered", "cause": "sensor_open", "ch": 2}).to_string(),
            }),
            Scenario::Malformed if t % 5 == 4 => {
                let bad = match (t / 5) % 3 {
                    0 => "{not json".to_owned(),
                    1 => json!({"ts": ts, "detectors": [{"addr": 200, "leak": [10.0]}]}).to_string(),
                    _ => json!({"ts": ts, "detectors": [{"addr": 1, "leak": [-5.0]}]}).to_string(),
                };
                out.push(SimMessage { suffix: "telemetry", payload: bad });
                return out;
            }
            _ => {}
        }
        let mut entries = Vec::new();
        for addr in 1..=self.detectors {
            entries.push(self.entry(addr, t));
        }
        out.push(SimMessage {
            suffix: "telemetry",
            payload: json!({"ts": ts, "seq": self.tick, "detectors": entries}).to_string(),
        });
        out
    }

    fn entry(&mut self, addr: u8, t: u64) -> Value {
        let n = self.noise();
        let mut leak = 40.0 + 10.0 * n + f64::from(addr) * 3.0;
        let mut temp1 = 36.0 + 2.0 * self.noise();
        let first = addr == 1;
        match self.scenario {
            Scenario::LeakCreep if first => leak = if t < 100 { 150.0 + 2.2 * t as f64 } else { 60.0 },
            Scenario::Overheat if first => {
                temp1 = if t < 60 { 40.0 + t as f64 } else { (100.0 - (t - 60) as f64 * 1.5).max(38.0) };
            }
            Scenario::Flapping if first => leak = if t.is_multiple_of(2) { 303.0 } else { 296.0 },
            _ => {}
        }
        let temp2 = if self.scenario == Scenario::SensorOpen && first && (10..70).contains(&t) {
            Value::Null
        } else {
            json!(Self::round1(34.0 + self.noise()))
        };
        let u = [220.0 + 3.0 * self.noise(), 221.0 + 3.0 * self.noise(), 219.0 + 3.0 * self.noise()];
        let i = [12.0 + 2.0 * self.noise(), 11.0 + 2.0 * self.noise(), 10.0 + 2.0 * self.noise()];
        json!({
            "addr": addr,
            "leak": [Self::round1(leak)],
            "temp": [Self::round1(temp1), temp2, null, null],
            "u": u.map(Self::round1),
            "i": i.map(Self::round1),
            "di": 1,
            "do": 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak_of(m: &SimMessage) -> Option<f64> {
        let v: Value = serde_json::from_str(&m.payload).ok()?;
        v["detectors"][0]["leak"][0].as_f64()
    }

    #[test]
    fn leak_creep_crosses_the_set_point_and_recovers() {
        let mut d = SimDevice::new("SIM-1", 2, Scenario::LeakCreep, 7);
        let now = Utc::now();
        let leaks: Vec<f64> =
            (0..CYCLE).filter_map(|_| d.tick(now).iter().find(|m| m.suffix == "telemetry").and_then(leak_of)).collect();
        assert!(leaks.iter().any(|&l| l > 300.0) && leaks.iter().any(|&l| l < 240.0));
        assert!(leaks.last().is_some_and(|&l| l < 100.0), "repaired at the end of the cycle");
    }

    #[test]
    fn offline_goes_silent_with_a_last_will_and_returns() {
        let mut d = SimDevice::new("SIM-2", 1, Scenario::Offline, 1);
        let now = Utc::now();
        let ticks: Vec<Vec<SimMessage>> = (0..CYCLE).map(|_| d.tick(now)).collect();
        assert_eq!(ticks[40], vec![SimMessage { suffix: "status", payload: r#"{"online":false}"#.into() }]);
        assert!(ticks[50].is_empty());
        assert!(ticks[80].iter().any(|m| m.suffix == "status" && m.payload.contains("true")));
    }

    #[test]
    fn every_payload_is_contract_json_except_the_malformed_ones() {
        for scenario in Scenario::ALL {
            let mut d = SimDevice::new("SIM-3", 3, scenario, 3);
            for _ in 0..CYCLE {
                for m in d.tick(Utc::now()) {
                    let parsed = serde_json::from_str::<Value>(&m.payload);
                    assert!(parsed.is_ok() || scenario == Scenario::Malformed, "{scenario:?}: {}", m.payload);
                }
            }
            assert_eq!(Scenario::parse(scenario.name()), Some(scenario));
        }
    }
}
