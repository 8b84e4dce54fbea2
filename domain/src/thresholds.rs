//! Alarm set-points and their GB 14287 ranges.
//!
//! Set-points are stored as overrides at three levels — tenant, project, detector — and
//! resolved per channel: the most specific level that sets a value wins, and the platform
//! defaults (typical device defaults and the domain guide's voltage rules) fill the rest.

use serde::{Deserialize, Serialize};

use crate::validate::{Checked, ValidationError, number_in};

/// Nominal phase voltage that the default voltage set-points are derived from.
pub const NOMINAL_PHASE_VOLTAGE_V: f64 = 220.0;

/// Residual-current set-points above this are allowed but outside design guidance (300–500 mA).
pub const LEAK_DESIGN_MAX_MA: f64 = 500.0;

/// Set-points configured at one level; `None` inherits from the level above.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ThresholdOverrides {
    /// Residual-current alarm set-point, mA (GB: 20–1000).
    pub leak_ma: Option<f64>,
    /// Residual-current alarm delay, s (0–60).
    pub leak_delay_s: Option<f64>,
    /// Temperature alarm set-point, °C (GB: 55–140).
    pub temp_c: Option<f64>,
    /// Temperature alarm delay, s (0–60).
    pub temp_delay_s: Option<f64>,
    /// Over-voltage set-point, V.
    pub overvoltage_v: Option<f64>,
    /// Under-voltage set-point, V.
    pub undervoltage_v: Option<f64>,
    /// Over-current set-point, A (1.0–1.2 × the circuit's rated current).
    pub overcurrent_a: Option<f64>,
    /// Pre-alarm level as a percentage of the alarm set-point (50–100).
    pub prealarm_percent: Option<f64>,
    /// Hysteresis band below the set-point before an alarm condition clears, % (0–20).
    pub hysteresis_percent: Option<f64>,
}

/// A valid set-point that is nevertheless worth a second look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThresholdWarning {
    /// The input field.
    pub field: String,
    /// Why it deserves attention.
    pub message: String,
}

impl ThresholdOverrides {
    /// Checks every present value against its range; returns the warnings of a valid set.
    pub fn validate(&self) -> Checked<Vec<ThresholdWarning>> {
        let checks: [(&str, Option<f64>, f64, f64, &str); 9] = [
            ("leakMa", self.leak_ma, 20.0, 1000.0, "mA"),
            ("leakDelayS", self.leak_delay_s, 0.0, 60.0, "s"),
            ("tempC", self.temp_c, 55.0, 140.0, "°C"),
            ("tempDelayS", self.temp_delay_s, 0.0, 60.0, "s"),
            ("overvoltageV", self.overvoltage_v, 100.0, 1000.0, "V"),
            ("undervoltageV", self.undervoltage_v, 50.0, 400.0, "V"),
            ("overcurrentA", self.overcurrent_a, 0.1, 10000.0, "A"),
            ("prealarmPercent", self.prealarm_percent, 50.0, 100.0, "%"),
            ("hysteresisPercent", self.hysteresis_percent, 0.0, 20.0, "%"),
        ];
        for (field, value, min, max, unit) in checks {
            if let Some(v) = value {
                number_in(field, v, min, max, unit)?;
            }
        }
        if let (Some(over), Some(under)) = (self.overvoltage_v, self.undervoltage_v)
            && under >= over
        {
            return Err(ValidationError::new("undervoltageV", "must be below the over-voltage set-point"));
        }
        let mut warnings = Vec::new();
        if self.leak_ma.is_some_and(|v| v > LEAK_DESIGN_MAX_MA) {
            warnings.push(ThresholdWarning {
                field: "leakMa".into(),
                message: "above the 300–500 mA design guidance; 300 mA of leakage can ignite".into(),
            });
        }
        Ok(warnings)
    }

    /// Layers `self` over `base`: values set here win.
    pub fn over(&self, base: &ThresholdOverrides) -> ThresholdOverrides {
        ThresholdOverrides {
            leak_ma: self.leak_ma.or(base.leak_ma),
            leak_delay_s: self.leak_delay_s.or(base.leak_delay_s),
            temp_c: self.temp_c.or(base.temp_c),
            temp_delay_s: self.temp_delay_s.or(base.temp_delay_s),
            overvoltage_v: self.overvoltage_v.or(base.overvoltage_v),
            undervoltage_v: self.undervoltage_v.or(base.undervoltage_v),
            overcurrent_a: self.overcurrent_a.or(base.overcurrent_a),
            prealarm_percent: self.prealarm_percent.or(base.prealarm_percent),
            hysteresis_percent: self.hysteresis_percent.or(base.hysteresis_percent),
        }
    }
}

/// The set-points that apply to a detector after inheritance.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EffectiveThresholds {
    /// Residual-current alarm set-point, mA.
    pub leak_ma: f64,
    /// Residual-current alarm delay, s.
    pub leak_delay_s: f64,
    /// Temperature alarm set-point, °C.
    pub temp_c: f64,
    /// Temperature alarm delay, s.
    pub temp_delay_s: f64,
    /// Over-voltage set-point, V.
    pub overvoltage_v: f64,
    /// Under-voltage set-point, V.
    pub undervoltage_v: f64,
    /// Over-current set-point, A; `None` until someone enters the circuit's rating.
    pub overcurrent_a: Option<f64>,
    /// Pre-alarm level, % of the set-point.
    pub prealarm_percent: f64,
    /// Hysteresis band, %.
    pub hysteresis_percent: f64,
}

impl EffectiveThresholds {
    /// Platform defaults: typical device defaults (300 mA / 5 s, 85 °C) and voltage limits of
    /// 115 % / 85 % of the nominal phase voltage.
    pub const DEFAULT: EffectiveThresholds = EffectiveThresholds {
        leak_ma: 300.0,
        leak_delay_s: 5.0,
        temp_c: 85.0,
        temp_delay_s: 5.0,
        overvoltage_v: NOMINAL_PHASE_VOLTAGE_V * 1.15,
        undervoltage_v: NOMINAL_PHASE_VOLTAGE_V * 0.85,
        overcurrent_a: None,
        prealarm_percent: 80.0,
        hysteresis_percent: 5.0,
    };

    /// Resolves tenant → project → detector overrides over the defaults.
    pub fn resolve(tenant: &ThresholdOverrides, project: &ThresholdOverrides, detector: &ThresholdOverrides) -> Self {
        let merged = detector.over(&project.over(tenant));
        let d = Self::DEFAULT;
        EffectiveThresholds {
            leak_ma: merged.leak_ma.unwrap_or(d.leak_ma),
            leak_delay_s: merged.leak_delay_s.unwrap_or(d.leak_delay_s),
            temp_c: merged.temp_c.unwrap_or(d.temp_c),
            temp_delay_s: merged.temp_delay_s.unwrap_or(d.temp_delay_s),
            overvoltage_v: merged.overvoltage_v.unwrap_or(d.overvoltage_v),
            undervoltage_v: merged.undervoltage_v.unwrap_or(d.undervoltage_v),
            overcurrent_a: merged.overcurrent_a.or(d.overcurrent_a),
            prealarm_percent: merged.prealarm_percent.unwrap_or(d.prealarm_percent),
            hysteresis_percent: merged.hysteresis_percent.unwrap_or(d.hysteresis_percent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(f: impl FnOnce(&mut ThresholdOverrides)) -> ThresholdOverrides {
        let mut t = ThresholdOverrides::default();
        f(&mut t);
        t
    }

    #[test]
    fn gb_ranges_are_enforced() {
        let cases: Vec<(ThresholdOverrides, Option<&str>)> = vec![
            (only(|t| t.leak_ma = Some(20.0)), None),
            (only(|t| t.leak_ma = Some(1000.0)), None),
            (only(|t| t.leak_ma = Some(19.9)), Some("leakMa")),
            (only(|t| t.leak_ma = Some(1000.1)), Some("leakMa")),
            (only(|t| t.leak_ma = Some(f64::NAN)), Some("leakMa")),
            (only(|t| t.temp_c = Some(55.0)), None),
            (only(|t| t.temp_c = Some(140.0)), None),
            (only(|t| t.temp_c = Some(54.0)), Some("tempC")),
            (only(|t| t.temp_c = Some(141.0)), Some("tempC")),
            (only(|t| t.leak_delay_s = Some(60.0)), None),
            (only(|t| t.leak_delay_s = Some(61.0)), Some("leakDelayS")),
            (only(|t| t.temp_delay_s = Some(-1.0)), Some("tempDelayS")),
            (only(|t| t.overcurrent_a = Some(0.0)), Some("overcurrentA")),
            (only(|t| t.hysteresis_percent = Some(25.0)), Some("hysteresisPercent")),
            (
                only(|t| {
                    t.overvoltage_v = Some(240.0);
                    t.undervoltage_v = Some(250.0);
                }),
                Some("undervoltageV"),
            ),
        ];
        for (overrides, field) in cases {
            let result = overrides.validate();
            assert_eq!(result.as_ref().err().map(|e| e.field.as_str()), field, "{overrides:?}");
        }
    }

    #[test]
    fn leakage_above_design_guidance_warns() {
        let warnings = only(|t| t.leak_ma = Some(800.0)).validate().unwrap_or_default();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].field, "leakMa");
        assert!(only(|t| t.leak_ma = Some(500.0)).validate().unwrap_or_default().is_empty());
    }

    #[test]
    fn most_specific_level_wins_per_channel() {
        let tenant = only(|t| {
            t.leak_ma = Some(400.0);
            t.temp_c = Some(90.0);
        });
        let project = only(|t| t.temp_c = Some(70.0));
        let detector = only(|t| t.leak_delay_s = Some(2.0));
        let eff = EffectiveThresholds::resolve(&tenant, &project, &detector);
        assert_eq!(eff.leak_ma, 400.0);
        assert_eq!(eff.temp_c, 70.0);
        assert_eq!(eff.leak_delay_s, 2.0);
        assert_eq!(eff.temp_delay_s, 5.0);
        assert!((eff.overvoltage_v - 253.0).abs() < 1e-9);
        assert!((eff.undervoltage_v - 187.0).abs() < 1e-9);
        assert_eq!(eff.overcurrent_a, None);
    }
}
