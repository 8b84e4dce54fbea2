//! The decoding and encoding rules of the device protocol, case by case.

use super::*;
use chrono::TimeZone;

/// 2025-11-23T10:15:30Z, 123 ms before the contract's example telemetry time.
fn received() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(1_763_892_930_000).unwrap()
}

fn ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// Detectors 1–10 are registered.
fn registered(addr: u8) -> bool {
    (1..=10).contains(&addr)
}

fn telemetry(json: &str) -> Result<Telemetry, Rejection> {
    decode_telemetry(json.as_bytes(), received(), registered)
}

fn event(json: &str) -> Result<DeviceEvent, Rejection> {
    decode_event(json.as_bytes(), received(), registered)
}

/// The reason of the single entry of `{"detectors": [entry]}`, or `None` when accepted.
fn entry_reason(entry: &str) -> Option<RejectReason> {
    let t = telemetry(&format!(r#"{{"detectors": [{entry}]}}"#)).unwrap();
    assert_eq!(t.readings.len() + t.rejected.len(), 1);
    t.rejected.first().map(|r| r.rejection.reason)
}

#[test]
fn reason_codes_are_unique_snake_case_and_round_trip() {
    let mut codes: Vec<_> = RejectReason::ALL.iter().map(|r| r.code()).collect();
    for (r, code) in RejectReason::ALL.iter().zip(&codes) {
        assert_eq!(RejectReason::from_code(code), Some(*r));
        assert!(code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
    }
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), RejectReason::ALL.len());
    let r = Rejection::new(RejectReason::OutOfRange, "leak too big");
    assert_eq!(r.to_string(), "out_of_range: leak too big");
}

#[test]
fn topics() {
    use TopicKind::*;
    let long = format!("sw/{}/telemetry", "x".repeat(64));
    let too_long = format!("sw/{}/telemetry", "x".repeat(65));
    type Case<'a> = (&'a str, &'a str, Result<(&'a str, TopicKind), RejectReason>);
    let cases: &[Case] = &[
        ("sw", "sw/SW-0001_a/telemetry", Ok(("SW-0001_a", Telemetry))),
        ("sw", "sw/dev1/event", Ok(("dev1", Event))),
        ("sw", "sw/dev1/status", Ok(("dev1", Status))),
        ("sw", "sw/dev1/cmd/ack", Ok(("dev1", CommandAck))),
        ("sw/", "sw/dev1/status", Ok(("dev1", Status))),
        ("acme/sw", "acme/sw/dev1/event", Ok(("dev1", Event))),
        ("sw", &long, Ok((&long[3..67], Telemetry))),
        ("sw", &too_long, Err(RejectReason::BadSerial)),
        ("sw", "sw/bad serial/telemetry", Err(RejectReason::BadSerial)),
        ("sw", "sw/dev.1/telemetry", Err(RejectReason::BadSerial)),
        ("sw", "sw/设备/telemetry", Err(RejectReason::BadSerial)),
        ("sw", "sw//telemetry", Err(RejectReason::BadSerial)),
        ("sw", "sw/+/telemetry", Err(RejectReason::BadSerial)),
        ("sw", "sw/dev1/cmd", Err(RejectReason::BadTopic)),
        ("sw", "sw/dev1/telemetry/extra", Err(RejectReason::BadTopic)),
        ("sw", "sw/dev1/Telemetry", Err(RejectReason::BadTopic)),
        ("sw", "sw/dev1/", Err(RejectReason::BadTopic)),
        ("sw", "sw/dev1", Err(RejectReason::BadTopic)),
        ("sw", "xx/dev1/telemetry", Err(RejectReason::BadTopic)),
        ("sw", "swx/dev1/telemetry", Err(RejectReason::BadTopic)),
        ("sw", "$share/g/sw/dev1/telemetry", Err(RejectReason::BadTopic)),
        ("sw", "", Err(RejectReason::BadTopic)),
    ];
    for (prefix, topic, expected) in cases {
        let got = parse_topic(prefix, topic).map_err(|r| r.reason);
        assert_eq!(&got, expected, "{prefix} {topic}");
    }
    assert_eq!(command_topic("sw/", "dev1"), "sw/dev1/cmd");
    for kind in TopicKind::ALL {
        assert_eq!(parse_topic("sw", &format!("sw/d/{}", kind.suffix())).unwrap(), ("d", kind));
    }
}

#[test]
fn the_contract_example_decodes() {
    let t = telemetry(
        r#"{"ts": 1763892930123, "seq": 1024, "detectors": [{"addr": 1, "leak": [35.2],
            "temp": [41.5, 40.1, null, null], "u": [220.1, 221.0, 219.8], "i": [10.2, 9.8, 11.0],
            "di": 1, "do": 0}]}"#,
    )
    .unwrap();
    let at = ms(1_763_892_930_123);
    assert_eq!(t.at, at);
    assert_eq!(t.seq, Some(1024));
    assert!(t.rejected.is_empty());
    let expected = Reading {
        at,
        leak_ma: vec![Some(35.2)],
        temp_c: vec![Some(41.5), Some(40.1), None, None],
        voltage_v: vec![Some(220.1), Some(221.0), Some(219.8)],
        current_a: vec![Some(10.2), Some(9.8), Some(11.0)],
        digital_in: Some(1),
        digital_out: Some(0),
    };
    assert_eq!(t.readings, vec![(1, expected)]);
}

#[test]
fn timestamps() {
    let hour = 3_600_000;
    let cases: &[(&str, Result<DateTime<Utc>, RejectReason>)] = &[
        (r#""ts": 1763892930123,"#, Ok(ms(1_763_892_930_123))),
        (r#""ts": 0,"#, Ok(ms(0))),
        (r#""ts": "2025-11-23T10:15:30.123Z","#, Ok(ms(1_763_892_930_123))),
        (r#""ts": "2025-11-23T18:15:30.123+08:00","#, Ok(ms(1_763_892_930_123))),
        ("", Ok(received())),
        (r#""ts": null,"#, Ok(received())),
        // Exactly 24 h ahead is still accepted; one millisecond more is not.
        (&format!(r#""ts": {},"#, 1_763_892_930_000 + 24 * hour), Ok(ms(1_763_892_930_000 + 24 * hour))),
        (&format!(r#""ts": {},"#, 1_763_892_930_001 + 24 * hour), Err(RejectReason::FutureTimestamp)),
        (r#""ts": "2025-11-24T10:15:30.001Z","#, Err(RejectReason::FutureTimestamp)),
        (r#""ts": -1,"#, Err(RejectReason::BadTimestamp)),
        (r#""ts": 1763892930123.5,"#, Err(RejectReason::BadTimestamp)),
        (r#""ts": 1e300,"#, Err(RejectReason::BadTimestamp)),
        (r#""ts": 9223372036854775807,"#, Err(RejectReason::BadTimestamp)),
        (r#""ts": 18446744073709551615,"#, Err(RejectReason::BadTimestamp)),
        (r#""ts": "1763892930123","#, Err(RejectReason::BadTimestamp)),
        (r#""ts": "2025-11-23 10:15","#, Err(RejectReason::BadTimestamp)),
        (r#""ts": "2025-11-23T10:15:30","#, Err(RejectReason::BadTimestamp)),
        (r#""ts": true,"#, Err(RejectReason::BadTimestamp)),
        (r#""ts": {},"#, Err(RejectReason::BadTimestamp)),
    ];
    for (ts, expected) in cases {
        let json = format!(r#"{{{ts} "detectors": [{{"addr": 1, "leak": [1]}}]}}"#);
        let got = telemetry(&json).map(|t| t.at).map_err(|r| r.reason);
        assert_eq!(&got, expected, "{json}");
        if let Ok(at) = expected {
            assert_eq!(telemetry(&json).unwrap().readings[0].1.at, *at);
        }
        // Events share the timestamp rules.
        let json = format!(r#"{{{ts} "addr": 1, "type": "trip"}}"#);
        assert_eq!(&event(&json).map(|e| e.at).map_err(|r| r.reason), expected, "{json}");
    }
}

#[test]
fn whole_message_rejections() {
    let entry = r#"{"addr": 1}"#;
    let many = |n: usize| {
        let entries: Vec<String> = (0..n).map(|_| entry.to_owned()).collect();
        format!(r#"{{"detectors": [{}]}}"#, entries.join(","))
    };
    let cases: &[(&str, RejectReason)] = &[
        ("", RejectReason::NotJson),
        ("not json", RejectReason::NotJson),
        (r#"{"detectors": [{"addr": 1, "leak": [NaN]}]}"#, RejectReason::NotJson),
        (r#"{"detectors": [{"addr": 1}]"#, RejectReason::NotJson),
        (r#"{"detectors": [{"addr": 1, "leak": [1e400]}]}"#, RejectReason::NotJson),
        ("[]", RejectReason::WrongType),
        ("42", RejectReason::WrongType),
        ("null", RejectReason::WrongType),
        ("{}", RejectReason::MissingDetectors),
        (r#"{"ts": 1}"#, RejectReason::MissingDetectors),
        (r#"{"detectors": null}"#, RejectReason::MissingDetectors),
        (r#"{"detectors": []}"#, RejectReason::MissingDetectors),
        (r#"{"detectors": {"addr": 1}}"#, RejectReason::WrongType),
        (r#"{"detectors": "1"}"#, RejectReason::WrongType),
        (&many(65), RejectReason::TooManyDetectors),
        (r#"{"seq": -1, "detectors": [{"addr": 1}]}"#, RejectReason::BadSeq),
        (r#"{"seq": 1.5, "detectors": [{"addr": 1}]}"#, RejectReason::BadSeq),
        (r#"{"seq": "7", "detectors": [{"addr": 1}]}"#, RejectReason::BadSeq),
    ];
    for (json, reason) in cases {
        assert_eq!(telemetry(json).map_err(|r| r.reason), Err(*reason), "{json}");
    }
    assert!(decode_telemetry(&[0xff, 0xfe], received(), registered).is_err());
    // 64 entries is the limit (all but the first are duplicates, but the message counts).
    let t = telemetry(&many(64)).unwrap();
    assert_eq!((t.readings.len(), t.rejected.len()), (1, 63));
    assert_eq!(telemetry(r#"{"seq": null, "detectors": [{"addr": 1}]}"#).unwrap().seq, None);
    assert_eq!(telemetry(r#"{"seq": 0, "detectors": [{"addr": 1}]}"#).unwrap().seq, Some(0));
    let max = format!(r#"{{"seq": {}, "detectors": [{{"addr": 1}}]}}"#, u64::MAX);
    assert_eq!(telemetry(&max).unwrap().seq, Some(u64::MAX));
}

#[test]
fn unknown_top_level_fields_are_ignored() {
    let t = telemetry(r#"{"rssi": -70, "fw": "1.2", "detectors": [{"addr": 2}]}"#).unwrap();
    assert_eq!(t.readings.len(), 1);
}

#[test]
fn detector_entries() {
    use RejectReason::*;
    let cases: &[(&str, Option<RejectReason>)] = &[
        // Addresses.
        (r#"{"addr": 1}"#, None),
        (r#"{"addr": 10}"#, None),
        (r#"{"addr": 11}"#, Some(UnknownAddress)),
        (r#"{"addr": 247}"#, Some(UnknownAddress)),
        (r#"{"addr": 0}"#, Some(BadAddress)),
        (r#"{"addr": 248}"#, Some(BadAddress)),
        (r#"{"addr": -1}"#, Some(BadAddress)),
        (r#"{"addr": 1.0}"#, Some(BadAddress)),
        (r#"{"addr": "1"}"#, Some(BadAddress)),
        (r#"{"addr": null}"#, Some(BadAddress)),
        (r#"{"leak": [1]}"#, Some(BadAddress)),
        ("1", Some(WrongType)),
        ("[1]", Some(WrongType)),
        ("null", Some(WrongType)),
        // Leakage: 0–10000 mA, at most 8 channels.
        (r#"{"addr": 1, "leak": [0]}"#, None),
        (r#"{"addr": 1, "leak": [10000]}"#, None),
        (r#"{"addr": 1, "leak": [10000.0001]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "leak": [-0.1]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "leak": [-50]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "leak": [1e300]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "leak": [18446744073709551616]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "leak": [1, 2, 3, 4, 5, 6, 7, 8]}"#, None),
        (r#"{"addr": 1, "leak": [1, 2, 3, 4, 5, 6, 7, 8, 9]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "leak": []}"#, None),
        (r#"{"addr": 1, "leak": null}"#, None),
        (r#"{"addr": 1, "leak": [null]}"#, None),
        (r#"{"addr": 1, "leak": 35.2}"#, Some(WrongType)),
        (r#"{"addr": 1, "leak": ["35.2"]}"#, Some(WrongType)),
        (r#"{"addr": 1, "leak": [true]}"#, Some(WrongType)),
        (r#"{"addr": 1, "leak": [{}]}"#, Some(WrongType)),
        (r#"{"addr": 1, "leak": [[1]]}"#, Some(WrongType)),
        (r#"{"addr": 1, "leak": ["NaN"]}"#, Some(NotANumber)),
        (r#"{"addr": 1, "leak": ["-Infinity"]}"#, Some(NotANumber)),
        (r#"{"addr": 1, "leak": ["inf"]}"#, Some(NotANumber)),
        // Temperature: −40–200 °C, null = not fitted, at most 4 channels.
        (r#"{"addr": 1, "temp": [-40, 200, null, null]}"#, None),
        (r#"{"addr": 1, "temp": [-40.1]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "temp": [200.1]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "temp": [1, 2, 3, 4, 5]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "temp": [false]}"#, Some(WrongType)),
        (r#"{"addr": 1, "temp": {"1": 20}}"#, Some(WrongType)),
        // Voltage: 0–1000 V, at most 3 phases.
        (r#"{"addr": 1, "u": [0, 1000, 230]}"#, None),
        (r#"{"addr": 1, "u": [1000.1]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "u": [-1]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "u": [220, 220, 220, 220]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "u": "220"}"#, Some(WrongType)),
        // Current: 0–10000 A, at most 3 phases.
        (r#"{"addr": 1, "i": [0, 10000]}"#, None),
        (r#"{"addr": 1, "i": [10000.5]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "i": [-0.01]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "i": [1, 2, 3, 4]}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "i": ["nan"]}"#, Some(NotANumber)),
        // Bit sets: integers 0–65535.
        (r#"{"addr": 1, "di": 0, "do": 65535}"#, None),
        (r#"{"addr": 1, "di": null, "do": null}"#, None),
        (r#"{"addr": 1, "di": 65536}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "do": -1}"#, Some(OutOfRange)),
        (r#"{"addr": 1, "di": 1.5}"#, Some(WrongType)),
        (r#"{"addr": 1, "di": 1.0}"#, Some(WrongType)),
        (r#"{"addr": 1, "do": "1"}"#, Some(WrongType)),
        (r#"{"addr": 1, "do": true}"#, Some(WrongType)),
        (r#"{"addr": 1, "di": [1]}"#, Some(WrongType)),
        // Unknown fields inside a detector.
        (r#"{"addr": 1, "tmp": [20]}"#, Some(UnknownField)),
        (r#"{"addr": 1, "Leak": [20]}"#, Some(UnknownField)),
        (r#"{"addr": 1, "extra": null}"#, Some(UnknownField)),
        // Unknown address wins over other problems of the entry: register it first.
        (r#"{"addr": 99, "tmp": [20]}"#, Some(UnknownAddress)),
    ];
    for (entry, expected) in cases {
        assert_eq!(entry_reason(entry), *expected, "{entry}");
    }
}

#[test]
fn absent_fields_are_not_measured() {
    let t = telemetry(r#"{"detectors": [{"addr": 3}]}"#).unwrap();
    assert_eq!(t.readings, vec![(3, Reading { at: received(), ..Reading::default() })]);
    let t = telemetry(r#"{"detectors": [{"addr": 3, "leak": [null, 12], "u": [220, null, null]}]}"#).unwrap();
    assert_eq!(t.readings[0].1.leak_ma, vec![None, Some(12.0)]);
    assert_eq!(t.readings[0].1.voltage_v, vec![Some(220.0), None, None]);
    assert!(t.readings[0].1.temp_c.is_empty());
}

#[test]
fn bad_entries_do_not_spoil_good_ones() {
    let t = telemetry(
        r#"{"ts": 1763892930123, "detectors": [
            {"addr": 1, "leak": [35]},
            {"addr": 2, "leak": [-50]},
            {"addr": 99, "leak": [1]},
            {"addr": 3, "temp": ["hot"]},
            {"addr": 1, "leak": [36]},
            "x",
            {"addr": 4, "leak": [40], "colour": "red"},
            {"addr": 5, "temp": [20, null]}
        ]}"#,
    )
    .unwrap();
    let addrs: Vec<u8> = t.readings.iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs, vec![1, 5]);
    assert_eq!(t.readings[0].1.leak_ma, vec![Some(35.0)], "the first of a duplicated address is kept");
    let rejected: Vec<(usize, Option<u8>, RejectReason)> =
        t.rejected.iter().map(|r| (r.index, r.address, r.rejection.reason)).collect();
    assert_eq!(
        rejected,
        vec![
            (1, Some(2), RejectReason::OutOfRange),
            (2, Some(99), RejectReason::UnknownAddress),
            (3, Some(3), RejectReason::WrongType),
            (4, Some(1), RejectReason::DuplicateAddress),
            (5, None, RejectReason::WrongType),
            (6, Some(4), RejectReason::UnknownField),
        ]
    );
    assert!(t.rejected[0].rejection.detail.contains("detectors[1].leak[0]"), "{}", t.rejected[0].rejection);
    assert!(t.rejected[5].rejection.detail.contains("\"colour\""), "{}", t.rejected[5].rejection);
}

#[test]
fn duplicates_are_refused_even_after_a_bad_first_entry() {
    let t = telemetry(r#"{"detectors": [{"addr": 1, "leak": [-1]}, {"addr": 1, "leak": [1]}]}"#).unwrap();
    assert!(t.readings.is_empty());
    let reasons: Vec<_> = t.rejected.iter().map(|r| r.rejection.reason).collect();
    assert_eq!(reasons, vec![RejectReason::OutOfRange, RejectReason::DuplicateAddress]);
}

#[test]
fn registration_is_asked_once_per_address() {
    let asked = std::cell::RefCell::new(Vec::new());
    let t =
        decode_telemetry(br#"{"detectors": [{"addr": 7}, {"addr": 7}, {"addr": 8}, {"addr": 0}]}"#, received(), |a| {
            asked.borrow_mut().push(a);
            true
        })
        .unwrap();
    assert_eq!(t.readings.len(), 2);
    assert_eq!(*asked.borrow(), vec![7, 8]);
}

#[test]
fn long_device_text_is_shortened_in_details() {
    let key = "k".repeat(10_000);
    let t = telemetry(&format!(r#"{{"detectors": [{{"addr": 1, "{key}": 1}}]}}"#)).unwrap();
    assert!(t.rejected[0].rejection.detail.len() < 200);
}

#[test]
fn events_of_every_type() {
    use EventKind::*;
    let cases: &[(&str, EventKind, Channel)] = &[
        (r#""type": "leak_alarm", "ch": 1"#, LeakAlarm, Channel::new(Quantity::Leak, 1)),
        (r#""type": "leak_alarm""#, LeakAlarm, Channel::new(Quantity::Leak, 0)),
        (r#""type": "temp_alarm", "ch": 4"#, TempAlarm, Channel::new(Quantity::Temp, 4)),
        (r#""type": "overvoltage", "ch": 3"#, Overvoltage, Channel::new(Quantity::Voltage, 3)),
        (r#""type": "undervoltage""#, Undervoltage, Channel::new(Quantity::Voltage, 0)),
        (r#""type": "overcurrent", "ch": 2"#, Overcurrent, Channel::new(Quantity::Current, 2)),
        (r#""type": "phase_loss", "ch": 1"#, PhaseLoss, Channel::new(Quantity::Voltage, 1)),
        (r#""type": "arc_fault""#, ArcFault, Channel::DETECTOR),
        (r#""type": "sensor_open", "ch": 2"#, SensorOpen, Channel::new(Quantity::Detector, 2)),
        (r#""type": "sensor_short""#, SensorShort, Channel::DETECTOR),
        (r#""type": "power_fault""#, PowerFault, Channel::DETECTOR),
        (r#""type": "trip""#, Trip, Channel::DETECTOR),
    ];
    for (fields, kind, channel) in cases {
        let json = format!(r#"{{"ts": 1763892931000, "addr": 1, {fields}}}"#);
        let e = event(&json).unwrap();
        let expected = DeviceEvent {
            at: ms(1_763_892_931_000),
            address: 1,
            kind: *kind,
            cause: None,
            channel: *channel,
            value: None,
            setpoint: None,
        };
        assert_eq!(e, expected, "{json}");
        assert_eq!(event_type_from_name(event_type_name(*kind).unwrap()), Some(*kind));
    }
    for kind in [Offline, Online, Command] {
        assert_eq!(event_type_name(kind), None);
    }
}

#[test]
fn the_contract_event_example_decodes() {
    let e =
        event(r#"{"ts": 1763892931000, "addr": 1, "type": "leak_alarm", "ch": 1, "value": 512.0, "setpoint": 300.0}"#)
            .unwrap();
    assert_eq!(e.kind, EventKind::LeakAlarm);
    assert_eq!(e.channel, Channel::new(Quantity::Leak, 1));
    assert_eq!((e.value, e.setpoint), (Some(512.0), Some(300.0)));
    let e = event(r#"{"type":"recovered","cause":"leak_alarm","ch":1,"addr":2}"#).unwrap();
    assert_eq!((e.kind, e.cause, e.at), (EventKind::Recovered, Some(EventKind::LeakAlarm), received()));
    assert_eq!(e.channel, Channel::new(Quantity::Leak, 1));
}

#[test]
fn event_rules() {
    use RejectReason::*;
    let cases: &[(&str, Result<(), RejectReason>)] = &[
        // Recovered needs an alarm or fault cause; its channel follows the cause.
        (r#""addr": 1, "type": "recovered", "cause": "temp_alarm", "ch": 2"#, Ok(())),
        (r#""addr": 1, "type": "recovered", "cause": "power_fault""#, Ok(())),
        (r#""addr": 1, "type": "recovered", "cause": "sensor_open", "ch": 1"#, Ok(())),
        (r#""addr": 1, "type": "recovered""#, Err(BadCause)),
        (r#""addr": 1, "type": "recovered", "cause": null"#, Err(BadCause)),
        (r#""addr": 1, "type": "recovered", "cause": "trip""#, Err(BadCause)),
        (r#""addr": 1, "type": "recovered", "cause": "recovered""#, Err(BadCause)),
        (r#""addr": 1, "type": "recovered", "cause": "offline""#, Err(BadCause)),
        (r#""addr": 1, "type": "recovered", "cause": 1"#, Err(BadCause)),
        (r#""addr": 1, "type": "recovered", "cause": "temp_alarm", "ch": 5"#, Err(BadChannel)),
        (r#""addr": 1, "type": "leak_alarm", "cause": "leak_alarm""#, Err(BadCause)),
        // Types.
        (r#""addr": 1"#, Err(BadEventType)),
        (r#""addr": 1, "type": "LEAK_ALARM""#, Err(BadEventType)),
        (r#""addr": 1, "type": "offline""#, Err(BadEventType)),
        (r#""addr": 1, "type": "command""#, Err(BadEventType)),
        (r#""addr": 1, "type": "fire""#, Err(BadEventType)),
        (r#""addr": 1, "type": 1"#, Err(BadEventType)),
        // Addresses.
        (r#""type": "trip""#, Err(BadAddress)),
        (r#""addr": 0, "type": "trip""#, Err(BadAddress)),
        (r#""addr": 248, "type": "trip""#, Err(BadAddress)),
        (r#""addr": "1", "type": "trip""#, Err(BadAddress)),
        (r#""addr": 11, "type": "trip""#, Err(UnknownAddress)),
        // Channels are 1-based and bounded by the quantity.
        (r#""addr": 1, "type": "leak_alarm", "ch": 8"#, Ok(())),
        (r#""addr": 1, "type": "leak_alarm", "ch": 9"#, Err(BadChannel)),
        (r#""addr": 1, "type": "leak_alarm", "ch": 0"#, Err(BadChannel)),
        (r#""addr": 1, "type": "temp_alarm", "ch": 4"#, Ok(())),
        (r#""addr": 1, "type": "temp_alarm", "ch": 5"#, Err(BadChannel)),
        (r#""addr": 1, "type": "overvoltage", "ch": 4"#, Err(BadChannel)),
        (r#""addr": 1, "type": "overcurrent", "ch": 4"#, Err(BadChannel)),
        (r#""addr": 1, "type": "leak_alarm", "ch": 1.5"#, Err(BadChannel)),
        (r#""addr": 1, "type": "leak_alarm", "ch": -1"#, Err(BadChannel)),
        (r#""addr": 1, "type": "leak_alarm", "ch": "1""#, Err(BadChannel)),
        (r#""addr": 1, "type": "leak_alarm", "ch": 256"#, Err(BadChannel)),
        (r#""addr": 1, "type": "leak_alarm", "ch": null"#, Ok(())),
        // Values and set-points in the range of the kind's quantity.
        (r#""addr": 1, "type": "leak_alarm", "value": 10000, "setpoint": 20"#, Ok(())),
        (r#""addr": 1, "type": "leak_alarm", "value": 10001"#, Err(OutOfRange)),
        (r#""addr": 1, "type": "leak_alarm", "setpoint": -1"#, Err(OutOfRange)),
        (r#""addr": 1, "type": "temp_alarm", "value": -40, "setpoint": 200"#, Ok(())),
        (r#""addr": 1, "type": "temp_alarm", "value": 250"#, Err(OutOfRange)),
        (r#""addr": 1, "type": "overvoltage", "value": 1001"#, Err(OutOfRange)),
        (r#""addr": 1, "type": "overcurrent", "value": 10001"#, Err(OutOfRange)),
        (r#""addr": 1, "type": "recovered", "cause": "temp_alarm", "value": 300"#, Err(OutOfRange)),
        (r#""addr": 1, "type": "arc_fault", "value": 123456.0"#, Ok(())),
        (r#""addr": 1, "type": "arc_fault", "value": 1e308"#, Ok(())),
        (r#""addr": 1, "type": "leak_alarm", "value": "512""#, Err(WrongType)),
        (r#""addr": 1, "type": "leak_alarm", "value": true"#, Err(WrongType)),
        (r#""addr": 1, "type": "leak_alarm", "value": "NaN""#, Err(NotANumber)),
        (r#""addr": 1, "type": "leak_alarm", "value": null, "setpoint": null"#, Ok(())),
        // Unknown top-level fields are ignored.
        (r#""addr": 1, "type": "trip", "source": "button""#, Ok(())),
    ];
    for (fields, expected) in cases {
        let json = format!("{{{fields}}}");
        assert_eq!(event(&json).map(|_| ()).map_err(|r| r.reason), *expected, "{json}");
    }
    let e = event(r#"{"addr": 1, "type": "recovered", "cause": "temp_alarm", "ch": 2}"#).unwrap();
    assert_eq!(e.channel, Channel::new(Quantity::Temp, 2));
    let e = event(r#"{"addr": 1, "type": "recovered", "cause": "power_fault"}"#).unwrap();
    assert_eq!(e.channel, Channel::DETECTOR);
    for json in ["", "x", "[]"] {
        assert!(event(json).is_err());
    }
}

#[test]
fn statuses() {
    let cases: &[(&str, Result<bool, RejectReason>)] = &[
        (r#"{"online": true}"#, Ok(true)),
        (r#"{"online": false}"#, Ok(false)),
        (r#"{"online": false, "reason": "will"}"#, Ok(false)),
        (r#"{"online": "true"}"#, Err(RejectReason::BadStatus)),
        (r#"{"online": 1}"#, Err(RejectReason::BadStatus)),
        (r#"{"online": null}"#, Err(RejectReason::BadStatus)),
        ("{}", Err(RejectReason::BadStatus)),
        ("true", Err(RejectReason::WrongType)),
        ("online", Err(RejectReason::NotJson)),
        ("", Err(RejectReason::NotJson)),
    ];
    for (json, expected) in cases {
        assert_eq!(decode_status(json.as_bytes()).map_err(|r| r.reason), *expected, "{json}");
    }
}

#[test]
fn command_results() {
    let id = Uuid::parse_str("8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10").unwrap();
    let ok = CommandResult { id, ok: true, code: 0, msg: Some("done".into()) };
    let cases: &[(&str, Result<CommandResult, RejectReason>)] = &[
        (r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": 0, "msg": "done"}"#, Ok(ok.clone())),
        (
            r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": false, "code": -3}"#,
            Ok(CommandResult { id, ok: false, code: -3, msg: None }),
        ),
        (
            r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": false, "code": 2, "msg": null}"#,
            Ok(CommandResult { id, ok: false, code: 2, msg: None }),
        ),
        (r#"{"ok": true, "code": 0}"#, Err(RejectReason::BadCommandResult)),
        (r#"{"id": "nope", "ok": true, "code": 0}"#, Err(RejectReason::BadCommandResult)),
        (r#"{"id": 5, "ok": true, "code": 0}"#, Err(RejectReason::BadCommandResult)),
        (r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "code": 0}"#, Err(RejectReason::BadCommandResult)),
        (
            r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": "yes", "code": 0}"#,
            Err(RejectReason::BadCommandResult),
        ),
        (r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true}"#, Err(RejectReason::BadCommandResult)),
        (
            r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": 0.5}"#,
            Err(RejectReason::BadCommandResult),
        ),
        (
            r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": "0"}"#,
            Err(RejectReason::BadCommandResult),
        ),
        (
            r#"{"id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "ok": true, "code": 0, "msg": 1}"#,
            Err(RejectReason::BadCommandResult),
        ),
        ("[]", Err(RejectReason::WrongType)),
        ("{", Err(RejectReason::NotJson)),
    ];
    for (json, expected) in cases {
        assert_eq!(decode_command_result(json.as_bytes()).map_err(|r| r.reason), *expected, "{json}");
    }
}

fn command(op: CommandOp, params: Option<SetThresholds>) -> CommandMessage {
    CommandMessage {
        id: Uuid::parse_str("8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10").unwrap(),
        addr: 1,
        op,
        params,
        expires: ms(1_763_893_230_000),
    }
}

fn encoded(c: &CommandMessage) -> Value {
    serde_json::from_slice(&encode_command(c).unwrap()).unwrap()
}

#[test]
fn commands_encode_as_the_contract() {
    let params =
        SetThresholds { leak_ma: Some(300.0), leak_delay_s: Some(5.0), temp_c: Some(85.0), ..Default::default() };
    let json = String::from_utf8(encode_command(&command(CommandOp::SetThresholds, Some(params))).unwrap()).unwrap();
    assert!(json.contains(r#""leak_ma":300,"#) || json.contains(r#""leak_ma":300}"#), "{json}");
    assert!(json.contains(r#""leak_delay_s":5.0"#), "{json}");
    let expected = serde_json::json!({
        "id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "addr": 1, "op": "set_thresholds",
        "params": {"leak_ma": 300, "leak_delay_s": 5.0, "temp_c": 85},
        "expires": 1_763_893_230_000_i64
    });
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), expected);

    for op in CommandOp::ALL.into_iter().filter(|op| *op != CommandOp::SetThresholds) {
        let v = encoded(&command(op, None));
        let expected = serde_json::json!({
            "id": "8c1f6a52-3e0b-4b8e-9a53-2f3f1c1d9e10", "addr": 1, "op": op.code(),
            "expires": 1_763_893_230_000_i64
        });
        assert_eq!(v, expected);
        assert_eq!(CommandOp::from_code(op.code()), Some(op));
    }
    let all = SetThresholds {
        leak_ma: Some(500.0),
        leak_delay_s: Some(0.5),
        temp_c: Some(140.0),
        overvoltage_v: Some(253.1),
        undervoltage_v: Some(187.0),
        overcurrent_a: Some(63.25),
    };
    let v = encoded(&command(CommandOp::SetThresholds, Some(all)));
    assert_eq!(
        v["params"],
        serde_json::json!({"leak_ma": 500, "leak_delay_s": 0.5, "temp_c": 140, "overvoltage_v": 253.1,
            "undervoltage_v": 187.0, "overcurrent_a": 63.25})
    );
    assert_eq!(serde_json::to_value(CommandOp::SelfTest).unwrap(), "self_test");
}

#[test]
fn command_validation_names_the_field() {
    let t = |f: fn(&mut SetThresholds)| {
        let mut s = SetThresholds::default();
        f(&mut s);
        encode_command(&command(CommandOp::SetThresholds, Some(s))).map(|_| ()).map_err(|e| e.field)
    };
    type Tweak = fn(&mut SetThresholds);
    let cases: &[(Tweak, Result<(), &str>)] = &[
        (|s| s.leak_ma = Some(20.0), Ok(())),
        (|s| s.leak_ma = Some(1000.0), Ok(())),
        (|s| s.leak_ma = Some(19.0), Err("leakMa")),
        (|s| s.leak_ma = Some(1001.0), Err("leakMa")),
        (|s| s.leak_ma = Some(300.5), Err("leakMa")),
        (|s| s.leak_ma = Some(f64::NAN), Err("leakMa")),
        (|s| s.leak_delay_s = Some(0.0), Ok(())),
        (|s| s.leak_delay_s = Some(60.0), Ok(())),
        (|s| s.leak_delay_s = Some(0.3), Ok(())),
        (|s| s.leak_delay_s = Some(60.1), Err("leakDelayS")),
        (|s| s.leak_delay_s = Some(-0.1), Err("leakDelayS")),
        (|s| s.leak_delay_s = Some(1.25), Err("leakDelayS")),
        (|s| s.temp_c = Some(55.0), Ok(())),
        (|s| s.temp_c = Some(140.0), Ok(())),
        (|s| s.temp_c = Some(54.0), Err("tempC")),
        (|s| s.temp_c = Some(141.0), Err("tempC")),
        (|s| s.temp_c = Some(85.5), Err("tempC")),
        (|s| s.overvoltage_v = Some(253.1), Ok(())),
        (|s| s.overvoltage_v = Some(253.15), Err("overvoltageV")),
        (|s| s.overvoltage_v = Some(1000.1), Err("overvoltageV")),
        (|s| s.undervoltage_v = Some(187.0), Ok(())),
        (|s| s.undervoltage_v = Some(10.0), Err("undervoltageV")),
        (
            |s| {
                s.overvoltage_v = Some(200.0);
                s.undervoltage_v = Some(200.0);
            },
            Err("undervoltageV"),
        ),
        (|s| s.overcurrent_a = Some(63.25), Ok(())),
        (|s| s.overcurrent_a = Some(0.05), Err("overcurrentA")),
        (|s| s.overcurrent_a = Some(63.255), Err("overcurrentA")),
        (|_| {}, Err("params")),
    ];
    for (i, (f, expected)) in cases.iter().enumerate() {
        assert_eq!(t(*f), expected.map_err(String::from), "case {i}");
    }
    let mut c = command(CommandOp::SetThresholds, None);
    assert_eq!(encode_command(&c).unwrap_err().field, "params");
    c.op = CommandOp::Trip;
    c.params = Some(SetThresholds { leak_ma: Some(300.0), ..Default::default() });
    assert_eq!(encode_command(&c).unwrap_err().field, "params");
    c.params = None;
    for (addr, ok) in [(0, false), (1, true), (247, true), (248, false), (255, false)] {
        c.addr = addr;
        assert_eq!(encode_command(&c).is_ok(), ok, "{addr}");
        if !ok {
            assert_eq!(encode_command(&c).unwrap_err().field, "address");
        }
    }
}
