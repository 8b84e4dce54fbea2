//! The alarm engine's rules, case by case.

use super::*;
use chrono::TimeZone;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).single().unwrap_or_default() + Duration::seconds(seconds)
}

fn leak(seconds: i64, values: &[Option<f64>]) -> Reading {
    Reading { at: at(seconds), leak_ma: values.to_vec(), ..Reading::default() }
}

fn temp(seconds: i64, values: &[Option<f64>]) -> Reading {
    Reading { at: at(seconds), temp_c: values.to_vec(), ..Reading::default() }
}

fn volts(seconds: i64, values: &[Option<f64>]) -> Reading {
    Reading { at: at(seconds), voltage_v: values.to_vec(), ..Reading::default() }
}

fn amps(seconds: i64, values: &[Option<f64>]) -> Reading {
    Reading { at: at(seconds), current_a: values.to_vec(), ..Reading::default() }
}

/// Thresholds with the defaults except the given changes.
fn th(f: impl FnOnce(&mut EffectiveThresholds)) -> EffectiveThresholds {
    let mut t = EffectiveThresholds::DEFAULT;
    f(&mut t);
    t
}

/// A signal as a compact, readable line: `raised LEAK_ALARM/ALARM leak1`.
fn line(s: &Signal) -> String {
    let change = match s.change {
        Change::Raised => "raised",
        Change::Continuing => "continuing",
        Change::Cleared => "cleared",
        Change::Superseded => "superseded",
    };
    let quantity = match s.channel.quantity {
        Quantity::Leak => "leak",
        Quantity::Temp => "temp",
        Quantity::Voltage => "volt",
        Quantity::Current => "amp",
        Quantity::Detector => "detector",
    };
    format!("{change} {}/{} {quantity}{}", s.kind.code(), s.category.code(), s.channel.number)
}

struct Case {
    name: &'static str,
    thresholds: EffectiveThresholds,
    /// A reading (optionally with its own thresholds) and the signals it must produce.
    steps: Vec<(Reading, Option<EffectiveThresholds>, Vec<&'static str>)>,
}

fn step(reading: Reading, expected: &[&'static str]) -> (Reading, Option<EffectiveThresholds>, Vec<&'static str>) {
    (reading, None, expected.to_vec())
}

fn run(case: &Case) -> DetectorState {
    let mut state = DetectorState::default();
    for (i, (reading, thresholds, expected)) in case.steps.iter().enumerate() {
        let t = thresholds.as_ref().unwrap_or(&case.thresholds);
        let got: Vec<String> = evaluate(&mut state, t, reading).iter().map(line).collect();
        assert_eq!(got, *expected, "case '{}', step {i} ({reading:?})", case.name);
    }
    state
}

const S: Option<f64> = None;

fn cases() -> Vec<Case> {
    let quick = |f: fn(&mut EffectiveThresholds)| {
        th(|t| {
            t.leak_delay_s = 0.0;
            t.temp_delay_s = 0.0;
            f(t);
        })
    };
    vec![
        Case {
            name: "delay holds: nothing before 5 s, then raised once",
            thresholds: th(|_| {}),
            steps: vec![
                step(leak(0, &[Some(310.0)]), &[]),
                step(leak(3, &[Some(320.0)]), &[]),
                step(leak(5, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                step(leak(6, &[Some(330.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "a reading below the level resets the pending timer",
            thresholds: th(|t| t.prealarm_percent = 100.0),
            steps: vec![
                step(leak(0, &[Some(310.0)]), &[]),
                step(leak(3, &[Some(299.0)]), &[]),
                step(leak(6, &[Some(310.0)]), &[]),
                step(leak(10, &[Some(310.0)]), &[]),
                step(leak(11, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "zero delay raises on the first reading",
            thresholds: quick(|_| {}),
            steps: vec![
                step(leak(0, &[Some(300.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                step(leak(1, &[Some(100.0)]), &["cleared LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "flapping around 300 mA inside a 5 % band: one raised, cleared only below 285",
            thresholds: quick(|t| t.prealarm_percent = 100.0),
            steps: vec![
                step(leak(0, &[Some(299.0)]), &[]),
                step(leak(1, &[Some(301.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                step(leak(2, &[Some(299.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                step(leak(3, &[Some(302.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                step(leak(4, &[Some(286.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                step(leak(5, &[Some(300.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                step(leak(6, &[Some(285.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                step(leak(7, &[Some(284.9)]), &["cleared LEAK_ALARM/ALARM leak1"]),
                step(leak(8, &[Some(299.9)]), &[]),
                step(leak(9, &[Some(300.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "pre-alarm at 80 %, ended by the alarm, back after the alarm clears",
            thresholds: quick(|_| {}),
            steps: vec![
                step(leak(0, &[Some(239.0)]), &[]),
                step(leak(1, &[Some(240.0)]), &["raised LEAK_ALARM/PRE_ALARM leak1"]),
                step(leak(2, &[Some(260.0)]), &["continuing LEAK_ALARM/PRE_ALARM leak1"]),
                step(
                    leak(3, &[Some(300.0)]),
                    &["raised LEAK_ALARM/ALARM leak1", "superseded LEAK_ALARM/PRE_ALARM leak1"],
                ),
                step(leak(4, &[Some(290.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                step(leak(5, &[Some(280.0)]), &["cleared LEAK_ALARM/ALARM leak1", "raised LEAK_ALARM/PRE_ALARM leak1"]),
                step(leak(6, &[Some(229.0)]), &["continuing LEAK_ALARM/PRE_ALARM leak1"]),
                step(leak(7, &[Some(227.9)]), &["cleared LEAK_ALARM/PRE_ALARM leak1"]),
            ],
        },
        Case {
            name: "pre-alarm uses the alarm delay, counted from the first reading above its own level",
            thresholds: th(|_| {}),
            steps: vec![
                step(leak(0, &[Some(250.0)]), &[]),
                step(leak(2, &[Some(310.0)]), &[]),
                step(leak(5, &[Some(310.0)]), &["raised LEAK_ALARM/PRE_ALARM leak1"]),
                step(
                    leak(7, &[Some(310.0)]),
                    &["raised LEAK_ALARM/ALARM leak1", "superseded LEAK_ALARM/PRE_ALARM leak1"],
                ),
            ],
        },
        Case {
            name: "temperature per channel with pre-alarm",
            thresholds: quick(|_| {}),
            steps: vec![
                step(temp(0, &[Some(40.0), Some(67.9)]), &[]),
                step(temp(1, &[Some(40.0), Some(68.0)]), &["raised TEMP_ALARM/PRE_ALARM temp2"]),
                step(
                    temp(2, &[Some(41.0), Some(85.0)]),
                    &["raised TEMP_ALARM/ALARM temp2", "superseded TEMP_ALARM/PRE_ALARM temp2"],
                ),
                step(temp(3, &[Some(41.0), Some(81.0)]), &["continuing TEMP_ALARM/ALARM temp2"]),
                step(
                    temp(4, &[Some(41.0), Some(80.0)]),
                    &["cleared TEMP_ALARM/ALARM temp2", "raised TEMP_ALARM/PRE_ALARM temp2"],
                ),
                step(temp(5, &[Some(41.0), Some(50.0)]), &["cleared TEMP_ALARM/PRE_ALARM temp2"]),
            ],
        },
        Case {
            name: "temperature delay is its own",
            thresholds: th(|t| {
                t.leak_delay_s = 0.0;
                t.temp_delay_s = 10.0;
                t.prealarm_percent = 100.0;
            }),
            steps: vec![
                step(temp(0, &[Some(90.0)]), &[]),
                step(temp(9, &[Some(90.0)]), &[]),
                step(temp(10, &[Some(90.0)]), &["raised TEMP_ALARM/ALARM temp1"]),
            ],
        },
        Case {
            name: "over-voltage above 253 V with the 5 s power delay and hysteresis",
            thresholds: th(|_| {}),
            steps: vec![
                step(volts(0, &[Some(253.0), Some(220.0), Some(220.0)]), &[]),
                step(volts(1, &[Some(254.0), Some(220.0), Some(220.0)]), &[]),
                step(volts(6, &[Some(255.0), Some(220.0), Some(220.0)]), &["raised OVERVOLTAGE/ALARM volt1"]),
                step(volts(7, &[Some(241.0), Some(220.0), Some(220.0)]), &["continuing OVERVOLTAGE/ALARM volt1"]),
                step(volts(8, &[Some(240.0), Some(220.0), Some(220.0)]), &["cleared OVERVOLTAGE/ALARM volt1"]),
            ],
        },
        Case {
            name: "under-voltage below 187 V clears above 196.35 V",
            thresholds: th(|_| {}),
            steps: vec![
                step(volts(0, &[Some(220.0), Some(180.0), Some(220.0)]), &[]),
                step(volts(5, &[Some(220.0), Some(180.0), Some(220.0)]), &["raised UNDERVOLTAGE/ALARM volt2"]),
                step(volts(6, &[Some(220.0), Some(196.0), Some(220.0)]), &["continuing UNDERVOLTAGE/ALARM volt2"]),
                step(volts(7, &[Some(220.0), Some(197.0), Some(220.0)]), &["cleared UNDERVOLTAGE/ALARM volt2"]),
            ],
        },
        Case {
            name: "a phase below 110 V with the others normal is phase loss, not under-voltage",
            thresholds: th(|_| {}),
            steps: vec![
                step(volts(0, &[Some(0.0), Some(220.0), Some(220.0)]), &[]),
                step(volts(5, &[Some(0.0), Some(221.0), Some(219.0)]), &["raised PHASE_LOSS/ALARM volt1"]),
                step(volts(6, &[Some(100.0), Some(221.0), Some(219.0)]), &["continuing PHASE_LOSS/ALARM volt1"]),
                // Back above 115.5 V but still low: the phase is present, the voltage is not.
                step(volts(7, &[Some(150.0), Some(221.0), Some(219.0)]), &["cleared PHASE_LOSS/ALARM volt1"]),
                step(volts(12, &[Some(150.0), Some(221.0), Some(219.0)]), &["raised UNDERVOLTAGE/ALARM volt1"]),
            ],
        },
        Case {
            name: "under-voltage that becomes a phase loss is superseded",
            thresholds: th(|_| {}),
            steps: vec![
                step(volts(0, &[Some(180.0), Some(220.0), Some(220.0)]), &[]),
                step(volts(5, &[Some(180.0), Some(220.0), Some(220.0)]), &["raised UNDERVOLTAGE/ALARM volt1"]),
                step(volts(6, &[Some(20.0), Some(220.0), Some(220.0)]), &["continuing UNDERVOLTAGE/ALARM volt1"]),
                step(
                    volts(11, &[Some(20.0), Some(220.0), Some(220.0)]),
                    &["raised PHASE_LOSS/ALARM volt1", "superseded UNDERVOLTAGE/ALARM volt1"],
                ),
            ],
        },
        Case {
            name: "all phases low is under-voltage on each, never phase loss",
            thresholds: th(|_| {}),
            steps: vec![
                step(volts(0, &[Some(90.0), Some(95.0), Some(100.0)]), &[]),
                step(
                    volts(5, &[Some(90.0), Some(95.0), Some(100.0)]),
                    &[
                        "raised UNDERVOLTAGE/ALARM volt1",
                        "raised UNDERVOLTAGE/ALARM volt2",
                        "raised UNDERVOLTAGE/ALARM volt3",
                    ],
                ),
            ],
        },
        Case {
            name: "a single measured phase at 0 V is under-voltage (nothing to compare with)",
            thresholds: th(|_| {}),
            steps: vec![
                step(volts(0, &[Some(0.0), S, S]), &[]),
                step(volts(5, &[Some(0.0), S, S]), &["raised UNDERVOLTAGE/ALARM volt1"]),
            ],
        },
        Case {
            name: "over-current is ignored until a set-point is configured",
            thresholds: th(|_| {}),
            steps: vec![
                step(amps(0, &[Some(500.0), Some(10.0), Some(10.0)]), &[]),
                step(amps(10, &[Some(500.0), Some(10.0), Some(10.0)]), &[]),
            ],
        },
        Case {
            name: "over-current above the configured set-point; removing it ends the alarm",
            thresholds: th(|t| t.overcurrent_a = Some(100.0)),
            steps: vec![
                step(amps(0, &[Some(100.0), Some(101.0), Some(10.0)]), &[]),
                step(amps(5, &[Some(100.0), Some(101.0), Some(10.0)]), &["raised OVERCURRENT/ALARM amp2"]),
                step(amps(6, &[Some(100.0), Some(96.0), Some(10.0)]), &["continuing OVERCURRENT/ALARM amp2"]),
                (
                    amps(7, &[Some(100.0), Some(120.0), Some(10.0)]),
                    Some(th(|_| {})),
                    vec!["cleared OVERCURRENT/ALARM amp2"],
                ),
                (amps(8, &[Some(100.0), Some(120.0), Some(10.0)]), Some(th(|_| {})), vec![]),
            ],
        },
        Case {
            name: "unmeasured channels leave their state untouched",
            thresholds: th(|t| t.prealarm_percent = 100.0),
            steps: vec![
                step(leak(0, &[Some(310.0), Some(10.0)]), &[]),
                // Pending survives a reading without that channel...
                step(leak(3, &[S, Some(10.0)]), &[]),
                step(leak(5, &[Some(310.0), Some(10.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                // ... and so does an active condition: no continuing, no clearing.
                step(leak(6, &[S, Some(10.0)]), &[]),
                step(leak(7, &[]), &[]),
                step(leak(8, &[Some(100.0), S]), &["cleared LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "non-finite values are ignored like unmeasured ones",
            thresholds: quick(|t| t.prealarm_percent = 100.0),
            steps: vec![
                step(leak(0, &[Some(f64::NAN)]), &[]),
                step(leak(1, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                step(leak(2, &[Some(f64::NEG_INFINITY)]), &[]),
                step(leak(3, &[Some(f64::INFINITY)]), &[]),
                step(leak(4, &[Some(305.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "out-of-order readings change nothing",
            thresholds: quick(|t| t.prealarm_percent = 100.0),
            steps: vec![
                step(leak(10, &[Some(310.0), Some(10.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
                step(leak(5, &[Some(10.0), Some(400.0)]), &[]),
                step(leak(10, &[Some(311.0), Some(10.0)]), &["continuing LEAK_ALARM/ALARM leak1"]),
                step(leak(11, &[Some(10.0), Some(10.0)]), &["cleared LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "an out-of-order reading does not shorten a pending delay",
            thresholds: th(|t| t.prealarm_percent = 100.0),
            steps: vec![
                step(leak(10, &[Some(310.0)]), &[]),
                step(leak(4, &[Some(310.0)]), &[]),
                step(leak(12, &[Some(310.0)]), &[]),
                step(leak(15, &[Some(310.0)]), &["raised LEAK_ALARM/ALARM leak1"]),
            ],
        },
        Case {
            name: "channels are independent",
            thresholds: quick(|t| t.prealarm_percent = 100.0),
            steps: vec![
                step(
                    leak(0, &[Some(310.0), Some(100.0), Some(320.0)]),
                    &["raised LEAK_ALARM/ALARM leak1", "raised LEAK_ALARM/ALARM leak3"],
                ),
                step(
                    leak(1, &[Some(100.0), Some(100.0), Some(320.0)]),
                    &["cleared LEAK_ALARM/ALARM leak1", "continuing LEAK_ALARM/ALARM leak3"],
                ),
                step(
                    Reading {
                        temp_c: vec![Some(90.0)],
                        voltage_v: vec![Some(260.0), Some(220.0), Some(220.0)],
                        ..leak(2, &[Some(100.0), Some(300.0), Some(320.0)])
                    },
                    &[
                        "raised LEAK_ALARM/ALARM leak2",
                        "continuing LEAK_ALARM/ALARM leak3",
                        "raised TEMP_ALARM/ALARM temp1",
                    ],
                ),
            ],
        },
    ]
}

#[test]
fn rules_table() {
    for case in cases() {
        run(&case);
    }
}

/// Every step of the rules table: a reading called quiet yields no signal and leaves no
/// condition behind; readings that enter a rule, and any reading while a condition is
/// pending or active, are not quiet.
#[test]
fn quiet_readings_change_nothing_but_the_channel_times() {
    let (mut quiet, mut loud) = (0, 0);
    for case in cases() {
        let mut state = DetectorState::default();
        for (i, (reading, thresholds, _)) in case.steps.iter().enumerate() {
            let t = thresholds.as_ref().unwrap_or(&case.thresholds);
            let was_quiet = is_quiet(&state, t, reading);
            let was_idle = state.conditions.is_empty();
            let mut scratch = DetectorState { last_at: BTreeMap::new(), ..state.clone() };
            let enters = !evaluate(&mut scratch, t, reading).is_empty() || !scratch.conditions.is_empty();
            let before = state.clone();
            let mut if_quiet = before.clone();
            assert_eq!(evaluate_if_quiet(&mut if_quiet, t, reading), was_quiet, "case '{}', step {i}", case.name);
            let signals = evaluate(&mut state, t, reading);
            if was_quiet {
                assert_eq!(if_quiet, state, "case '{}', step {i}: the same evaluation", case.name);
                quiet += 1;
                assert!(signals.is_empty() && state.conditions.is_empty(), "case '{}', step {i}", case.name);
            } else {
                assert_eq!(if_quiet, before, "case '{}', step {i}: left for evaluate", case.name);
                loud += 1;
            }
            // "Not quiet" means a condition was pending or active, or the reading enters one.
            assert!(was_quiet || !was_idle || enters, "case '{}', step {i}", case.name);
        }
    }
    assert!(quiet >= 5 && loud > 10, "the table has both kinds: {quiet} quiet, {loud} not");

    let t = EffectiveThresholds::DEFAULT;
    let idle = DetectorState::default();
    let healthy = Reading {
        voltage_v: vec![Some(221.0), Some(219.5), None],
        current_a: vec![Some(40.0)],
        ..temp(0, &[Some(35.5), None])
    };
    assert!(is_quiet(&idle, &t, &Reading { leak_ma: vec![Some(20.0)], ..healthy.clone() }));
    assert!(!is_quiet(&idle, &t, &Reading { leak_ma: vec![Some(240.0)], ..healthy.clone() }), "pre-alarm level");
    assert!(!is_quiet(&idle, &t, &Reading { voltage_v: vec![Some(180.0)], ..healthy.clone() }), "under-voltage");
    let rated = th(|t| t.overcurrent_a = Some(32.0));
    assert!(!is_quiet(&idle, &rated, &healthy), "over-current once a rating is set");
    let mut pending = DetectorState::default();
    assert!(evaluate(&mut pending, &t, &leak(0, &[Some(310.0)])).is_empty(), "a 5 s delay: pending");
    assert!(!is_quiet(&pending, &t, &healthy), "a pending condition must see the next reading");
}

#[test]
fn signals_carry_value_setpoint_and_time() {
    let mut state = DetectorState::default();
    let t = th(|t| t.leak_delay_s = 0.0);
    let signals = evaluate(&mut state, &t, &leak(3, &[Some(250.0)]));
    assert_eq!(
        signals,
        vec![Signal {
            change: Change::Raised,
            kind: EventKind::LeakAlarm,
            channel: Channel::new(Quantity::Leak, 1),
            category: EventCategory::PreAlarm,
            value: 250.0,
            setpoint: 240.0,
            at: at(3),
        }]
    );
    assert!(state.is_active(Channel::new(Quantity::Leak, 1), EventKind::LeakAlarm, EventCategory::PreAlarm));
    assert!(!state.is_active(Channel::new(Quantity::Leak, 1), EventKind::LeakAlarm, EventCategory::Alarm));
}

/// A reading dated 23 h ahead of its arrival (a device clock running ahead) neither hides
/// the readings after it nor starts a delay that never elapses.
#[test]
fn a_reading_dated_ahead_is_evaluated_at_its_arrival() {
    let t = EffectiveThresholds::DEFAULT;
    let ahead = leak(23 * 3600, &[Some(40.0)]);
    let arrived = at(0);
    assert_eq!(as_evaluated(&ahead, arrived).at, arrived);
    let past = leak(-60, &[Some(40.0)]);
    assert!(matches!(as_evaluated(&past, arrived), Cow::Borrowed(r) if r.at == at(-60)), "buffered: kept");

    // As the device dated them: the alarm readings are "older" and ignored.
    let mut raw = DetectorState::default();
    evaluate(&mut raw, &t, &ahead);
    assert!(evaluate(&mut raw, &t, &leak(10, &[Some(500.0)])).is_empty());
    assert!(evaluate(&mut raw, &t, &leak(16, &[Some(500.0)])).is_empty(), "silenced for 23 h");

    // As evaluated: the alarm is raised once its delay has passed.
    let mut state = DetectorState::default();
    evaluate(&mut state, &t, &as_evaluated(&ahead, arrived));
    assert!(evaluate(&mut state, &t, &as_evaluated(&leak(10, &[Some(500.0)]), at(10))).is_empty(), "pending");
    let raised = evaluate(&mut state, &t, &as_evaluated(&leak(16, &[Some(500.0)]), at(16)));
    assert_eq!(
        raised.iter().map(|s| (s.change, s.kind, s.at)).collect::<Vec<_>>(),
        [(Change::Raised, EventKind::LeakAlarm, at(16))]
    );

    // A pending condition entered by a reading dated ahead is timed from its arrival.
    let mut pending = DetectorState::default();
    evaluate(&mut pending, &t, &as_evaluated(&leak(23 * 3600, &[Some(500.0)]), at(0)));
    let raised = evaluate(&mut pending, &t, &as_evaluated(&leak(6, &[Some(500.0)]), at(6)));
    assert_eq!(raised.len(), 1, "held 6 s since it arrived: raised");
}

#[test]
fn healthy_detector_keeps_only_timestamps() {
    let mut state = DetectorState::default();
    let t = EffectiveThresholds::DEFAULT;
    evaluate(&mut state, &t, &leak(0, &[Some(310.0)]));
    evaluate(&mut state, &t, &leak(1, &[Some(10.0)]));
    assert!(state.conditions.is_empty());
    assert_eq!(state.last_at.len(), 1);
    assert_eq!(state.active().count(), 0);
}

#[test]
fn restored_condition_continues_instead_of_raising_again() {
    let ch = Channel::new(Quantity::Leak, 1);
    let mut state = DetectorState::default();
    assert!(state.restore_active(ch, EventKind::LeakAlarm, EventCategory::Alarm, 300.0));
    assert!(!state.restore_active(ch, EventKind::LeakAlarm, EventCategory::Fault, 300.0));
    let t = EffectiveThresholds::DEFAULT;
    let got: Vec<String> = evaluate(&mut state, &t, &leak(0, &[Some(310.0)])).iter().map(line).collect();
    assert_eq!(got, ["continuing LEAK_ALARM/ALARM leak1"]);
    assert_eq!(state.active().collect::<Vec<_>>(), [(ch, EventKind::LeakAlarm, EventCategory::Alarm)]);
}

#[test]
fn state_round_trips_through_its_serialised_form() {
    // The domain crate has no serde format to test with; this checks the conversion the
    // derive goes through, and that a restored state behaves exactly like the original.
    let t = th(|t| t.overcurrent_a = Some(50.0));
    let mut state = DetectorState::default();
    evaluate(&mut state, &t, &leak(0, &[Some(310.0), Some(250.0)]));
    evaluate(&mut state, &t, &volts(0, &[Some(0.0), Some(220.0), Some(220.0)]));
    evaluate(&mut state, &t, &leak(5, &[Some(310.0), Some(250.0)]));
    evaluate(&mut state, &t, &amps(5, &[Some(60.0)]));
    assert!(!state.conditions.is_empty());

    let mut copy = DetectorState::from(StateRepr::from(state.clone()));
    assert_eq!(copy, state);
    let next = Reading { current_a: vec![Some(60.0)], ..volts(10, &[Some(0.0), Some(220.0), Some(220.0)]) };
    assert_eq!(evaluate(&mut copy, &t, &next), evaluate(&mut state, &t, &next));
    assert_eq!(copy, state);
}

#[test]
fn heartbeat_timeout_is_three_intervals_at_most_five_minutes() {
    let cases: [(u32, i64); 5] = [(10, 30), (60, 180), (100, 300), (600, 300), (0, 300)];
    for (interval, expected) in cases {
        assert_eq!(heartbeat_timeout(interval), Duration::seconds(expected), "interval {interval}");
    }
    assert_eq!(heartbeat_timeout(u32::MAX), Duration::seconds(300));
}

#[test]
fn offline_only_after_the_timeout_has_passed() {
    let cases: [(u32, i64, bool); 6] =
        [(60, 179, false), (60, 180, false), (60, 181, true), (600, 300, false), (600, 301, true), (60, -5, false)];
    for (interval, elapsed, expected) in cases {
        assert_eq!(offline_due(at(0), interval, at(elapsed)), expected, "interval {interval}, {elapsed} s");
    }
}
