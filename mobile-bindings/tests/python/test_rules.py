"""Every export of the bindings and its error paths, and the shared case table
(`mobile-bindings/tests/cases.json`, also checked against the server's rules in Rust)."""

import json

import pytest


FIELDS = ("leak_ma", "leak_delay_s", "temp_c", "temp_delay_s", "overvoltage_v", "undervoltage_v",
          "overcurrent_a", "prealarm_percent", "hysteresis_percent")


def overrides(m, **values):
    return m.ThresholdOverrides(**{f: values.get(f) for f in FIELDS})


def perms(m, role):
    return m.builtin_role_permissions(role)


def outcome(m, call):
    """A call's result in the table's words."""
    try:
        return call()
    except m.MobileError.Invalid as e:
        return f"VALIDATION:{e.field}"
    except m.MobileError.Forbidden:
        return "FORBIDDEN"
    except m.MobileError.Conflict:
        return "CONFLICT"


def test_case_table(m, cases):
    rows = []
    for c in cases["hazard"]:
        status = m.hazard_status_from_code(c["from"])
        action = getattr(m.HazardAction, c["action"])
        inp = m.ActionInput(text=c["text"], photos=["photo"] * c["photos"], passed=c["passed"])

        def step():
            s = m.hazard_transition(status, action, perms(m, c["role"]), inp)
            return m.hazard_status_code(s.status) if s.changed else "UNCHANGED"

        rows.append((f"hazard {c['from']} {c['action']} by {c['role']}", outcome(m, step), c["expect"]))
    for c in cases["hazardActions"]:
        got = [o.code for o in m.hazard_allowed_actions(m.hazard_status_from_code(c["from"]), perms(m, c["role"]))]
        rows.append((f"hazard {c['from']} actions for {c['role']}", got, c["expect"]))
    for c in cases["workOrder"]:
        state = m.OrderState(status=m.work_order_status_from_code(c["status"]), assigned=c["assigned"], has_hazards=c["hasHazards"])
        inp = m.ActionInput(text=c["text"], photos=["photo"] * c["photos"], passed=False)
        action = getattr(m.WorkOrderAction, c["action"])
        got = outcome(m, lambda: m.work_order_status_code(
            m.work_order_transition(state, action, perms(m, c["role"]), c["assignee"], inp)))
        rows.append((f"order {c['status']} {c['action']} by {c['role']}", got, c["expect"]))
    for c in cases["workOrderActions"]:
        state = m.OrderState(status=m.work_order_status_from_code(c["status"]), assigned=c["assigned"], has_hazards=c["hasHazards"])
        got = [o.code for o in m.work_order_allowed_actions(state, perms(m, c["role"]), c["assignee"])]
        rows.append((f"order {c['status']} actions for {c['role']}", got, c["expect"]))
    for c in cases["patrolTask"]:
        status = m.patrol_task_status_from_code(c["status"])
        got = m.patrol_task_actions(status, c["dueAt"], c["at"], perms(m, c["role"]), c["onPlan"])
        rows.append((f"task {c['status']} at {c['at']} by {c['role']}: actions", got, c["actions"]))
        after = outcome(m, lambda: m.patrol_task_after_check_in(status, c["dueAt"], c["at"], c["checked"], c["total"]))
        if not isinstance(after, str):
            after = {v: k for k, v in m.PatrolTaskStatus.__members__.items()}[after]
        rows.append((f"task {c['status']} at {c['at']} by {c['role']}: check-in", after, c["expect"]))
    different = [r for r in rows if r[1] != r[2]]
    for what, got, expected in rows:
        print(f"{'same' if got == expected else 'DIFFERENT':9} {what}: bindings {got}, table {expected}")
    print(f"python: {len(rows)} cases, {len(different)} different")
    assert not different


def test_needs_and_codes(m):
    needs = m.work_order_action_needs(m.WorkOrderAction.SUBMIT, m.OrderState(status=m.WorkOrderStatus.IN_PROGRESS, assigned=True, has_hazards=True))
    assert (needs.text_field, needs.text_required, needs.photos_field, needs.min_photos, needs.max_photos) == ("report", True, "attachmentIds", 1, 20)
    failed = m.hazard_action_needs(m.HazardAction.VERIFY, False)
    assert (failed.text_field, failed.text_required) == ("note", True)
    assert m.hazard_action_needs(m.HazardAction.VERIFY, True).text_required is False
    assert m.hazard_action_code(m.HazardAction.MARK_FALSE_ALARM) == "MARK_FALSE_ALARM"
    assert m.work_order_status_code(m.WorkOrderStatus.IN_PROGRESS) == "IN_PROGRESS"
    for bad in (lambda: m.hazard_status_from_code("open"), lambda: m.work_order_status_from_code("X"),
                lambda: m.patrol_task_status_from_code("LATE"), lambda: m.builtin_role_permissions("god")):
        with pytest.raises(m.MobileError.Invalid):
            bad()
    with pytest.raises(m.MobileError.Invalid) as e:
        m.hazard_allowed_actions(m.HazardStatus.OPEN, ["fieldwork", "root"])
    assert e.value.field == "permissions"
    with pytest.raises(m.MobileError.Invalid) as e:
        m.patrol_task_actions(m.PatrolTaskStatus.DUE, "tomorrow", "2026-12-06T08:00:00Z", ["fieldwork"], True)
    assert e.value.field == "dueAt"
    assert len({m.new_client_id() for _ in range(100)}) == 100


def test_readings_and_texts(m):
    t = m.resolve_thresholds(overrides(m, leak_ma=400.0), overrides(m), overrides(m, temp_c=None))
    assert t.leak_ma == 400.0 and t.temp_c == m.default_thresholds().temp_c
    reading = m.ReadingValues(leak_ma=[120.0, 330.0, 410.0, None], temp_c=[40.5, None], voltage_v=[221.0, 80.0, 260.0], current_a=[12.0])
    views = m.classify_reading(t, reading, ["temp:2", "detector:0"], "en")
    assert [(v.channel, v.class_code) for v in views] == [
        ("leak:1", "NORMAL"), ("leak:2", "PRE_ALARM"), ("leak:3", "ALARM"), ("leak:4", "NOT_FITTED"),
        ("temp:1", "NORMAL"), ("temp:2", "FAULT"), ("voltage:1", "NORMAL"), ("voltage:2", "ALARM"),
        ("voltage:3", "ALARM"), ("current:1", "NORMAL"), ("detector:0", "FAULT")]
    assert views[2].summary == "Leakage 3: 410 mA — alarm (set-point 400 mA)"
    assert views[7].kind == "PHASE_LOSS" and views[8].kind == "OVERVOLTAGE"
    zh = m.classify_reading(t, reading, [], "zh-CN")
    assert zh[7].summary == "B相电压：80 V — 报警（设定值 110 V）"
    assert m.format_value("temp:1", 72.5) == "72.5 °C"
    assert m.channel_name("voltage:1", "zh-CN") == "A相电压"
    for bad in (lambda: m.format_value("volt:1", 1.0), lambda: m.channel_name("x", "en"),
                lambda: m.classify_reading(t, reading, ["nope"], "en")):
        with pytest.raises(m.MobileError.Invalid):
            bad()
    notice = m.AlarmNotice(kind="LEAK_ALARM", category="ALARM", project="滨江商场", device="1号配电柜", position="B1",
                           channel="leak:1", value=480.0, setpoint=300.0, unacknowledged_min=None)
    text = m.alarm_text(notice, "zh-CN")
    assert text.title == "【电气报警】滨江商场"
    assert text.body == "剩余电流报警：480 mA（设定值 300 mA） — 1号配电柜，B1"
    notice.unacknowledged_min = 15
    assert m.alarm_text(notice, "en").title == "UNACKNOWLEDGED 15 MIN · 滨江商场"
    notice.kind = "BOOM"
    with pytest.raises(m.MobileError.Invalid) as e:
        m.alarm_text(notice, "en")
    assert e.value.field == "kind"
    assert m.work_notice_text(m.WorkNotice.REJECTED(title="B1 tray", note="gland open"), "Mall", "en").body == "B1 tray was rejected: gland open"
    assert m.work_notice_text(m.WorkNotice.OVERDUE(title="B1 tray", overdue_min=30, level=1), "商场", "zh-CN").title == "【工单超期】商场"
    assert m.patrol_missed_text("夜间巡检", "2026-12-07 00:00", True, "滨江商场", "zh-CN").title == "【巡检漏检】滨江商场"


def test_forms_and_qr(m):
    assert m.check_device_serial("SW-1") is None
    assert m.check_device_serial("bad serial").field == "serial"
    assert m.check_detector_address(248).field == "address"
    warnings = m.validate_thresholds(overrides(m, leak_ma=800.0))
    assert [w.field for w in warnings] == ["leakMa"]
    for field, values in [("tempC", dict(temp_c=20.0)), ("undervoltageV", dict(overvoltage_v=240.0, undervoltage_v=250.0))]:
        with pytest.raises(m.MobileError.Invalid) as e:
            m.validate_thresholds(overrides(m, **values))
        assert e.value.field == field
    assert m.check_hazard_report("  Cover missing ") == "Cover missing"
    cases = [
        ("description", lambda: m.check_hazard_report(" ")),
        ("at", lambda: m.check_device_time("2026-12-06T08:10:00Z", "2026-12-06T08:00:00Z")),
        ("title", lambda: m.check_work_order_form("", None)),
        ("checklist", lambda: m.check_checkpoint_form("Cabinet", None, [])),
        ("assigneeIds", lambda: m.check_patrol_plan_form("Round", 3, 0)),
        ("answers", lambda: m.check_checklist_answers(["Closed"], [])),
        ("qrPayload", lambda: m.parse_checkpoint_qr("https://example.com")),
    ]
    for field, call in cases:
        with pytest.raises(m.MobileError.Invalid) as e:
            call()
        assert e.value.field == field, (field, e.value)
    m.check_device_time("2026-12-06T08:04:00Z", "2026-12-06T08:00:00Z")
    m.check_work_order_form("Replace the section", "isolate first")
    m.check_checkpoint_form("Cabinet", "B1", ["Closed"])
    m.check_patrol_plan_form("Round", 3, 1)
    m.check_checklist_answers(["Closed"], [m.ChecklistAnswer(item="Closed", ok=True, note=None)])
    import base64
    b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
    checkpoint = "01930000-0000-7000-8000-0000000000ff"
    import uuid
    payload = f"SWQ1.{b64(uuid.UUID(checkpoint).bytes)}.{b64(bytes(12))}"
    assert m.is_checkpoint_qr(payload) and not m.is_checkpoint_qr(payload[:-2])
    assert m.parse_checkpoint_qr(payload) == checkpoint


def test_outbox_offline(m):
    o = m.Outbox()
    assert o.is_empty()
    at = "2026-12-06T08:30:00Z"
    order, hazard, task, project = (m.new_client_id() for _ in range(4))
    start = m.new_client_id()
    o.start_work_order(start, at, order)
    o.submit_work_order(m.new_client_id(), at, order, "replaced the section", [])
    o.acknowledge_hazard(m.new_client_id(), at, hazard, "seen")
    report = m.HazardReport(project_id=project, detector_id=None, checkpoint_id=None, description="Cover missing", attachment_ids=[], at=None)
    o.report_hazard(m.new_client_id(), at, report)
    bad = [
        ("clientId", lambda: o.start_work_order(start, at, order)),
        ("clientId", lambda: o.start_work_order("x", at, order)),
        ("at", lambda: o.start_work_order(m.new_client_id(), "now", order)),
        ("report", lambda: o.submit_work_order(m.new_client_id(), at, order, " ", [])),
        ("attachmentIds", lambda: o.submit_work_order(m.new_client_id(), at, order, "x", ["not-a-uuid"])),
        ("qrPayload", lambda: o.check_in(m.new_client_id(), at, task, "junk", [], None, [], [])),
        ("hazards", lambda: o.check_in(m.new_client_id(), at, task, "SWQ1.AZMAAAAAcACAAAAAAAAA_w.AAAAAAAAAAAAAAAA", [], None, [],
                                       [m.HazardReport(project_id=project, detector_id=None, checkpoint_id=None, description="", attachment_ids=[], at=None)])),
        ("description", lambda: o.report_hazard(m.new_client_id(), at, m.HazardReport(project_id=project, detector_id=None, checkpoint_id=None, description="", attachment_ids=[], at=None))),
        ("projectId", lambda: o.report_hazard(m.new_client_id(), at, m.HazardReport(project_id="p", detector_id=None, checkpoint_id=None, description="x", attachment_ids=[], at=None))),
    ]
    for field, call in bad:
        with pytest.raises(m.MobileError.Invalid) as e:
            call()
        assert e.value.field == field, (field, e.value)
    o.check_in(m.new_client_id(), at, task, "SWQ1.AZMAAAAAcACAAAAAAAAA_w.AAAAAAAAAAAAAAAA",
               [m.ChecklistAnswer(item="Closed", ok=True, note=None)], None, [], [])
    assert o.len() == 5
    stored = m.Outbox.from_bytes(o.to_bytes())
    assert [p.operation for p in stored.pending()] == ["startWorkOrder", "submitWorkOrder", "acknowledgeHazard", "reportHazard", "checkIn"]
    batch = stored.next_batch(2)
    assert json.loads(batch.variables_json) == {"operations": [
        {"clientId": start, "at": at, "startWorkOrder": {"id": order}},
        {"clientId": stored.pending()[1].client_id, "at": at, "submitWorkOrder": {"id": order, "report": "replaced the section"}},
    ]}
    assert "syncFieldOperations" in batch.query
    answer = {"data": {"syncFieldOperations": [
        {"clientId": batch.client_ids[0], "status": "REJECTED", "code": "UNAVAILABLE", "field": None, "message": "busy", "entityId": None},
        {"clientId": batch.client_ids[1], "status": "CONFLICT", "code": "CONFLICT", "field": None, "message": "moved", "entityId": order},
    ]}}
    settled = stored.settle(batch.client_ids, json.dumps(answer))
    assert [(s.disposition, s.held_back) for s in settled] == [(m.SyncDisposition.RETRY, False), (m.SyncDisposition.RETRY, True)]
    assert [p.attempts for p in stored.pending()[:2]] == [1, 1]
    for reply, code in [('{"errors": [{"message": "sign in", "extensions": {"code": "UNAUTHENTICATED"}}]}', "UNAUTHENTICATED"),
                        ("not json", "MALFORMED"), ("{}", "MALFORMED")]:
        with pytest.raises(m.MobileError.Sync) as e:
            stored.settle(batch.client_ids, reply)
        assert e.value.code == code
    assert stored.len() == 5
    assert stored.remove(stored.pending()[4].client_id) and stored.len() == 4
    with pytest.raises(m.MobileError.Invalid):
        m.Outbox.from_bytes(b"junk")
