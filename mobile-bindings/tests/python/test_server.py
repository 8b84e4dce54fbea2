"""The field app's day against the real server: a hazard and a work order driven through
their lifecycles with the bindings, a reading classified, and an outbox batch round-tripped
through `syncFieldOperations`, every answer compared with what the bindings predicted
offline (the table printed at the end shows no difference)."""

import datetime
import json

ORDERS = "{ workOrders(first: 10) { nodes { id status assignee { id } allowedActions hazards { id status } } } }"


def now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def predict(m, call):
    """The answer the app expects from the server for an operation, from the state machines."""
    try:
        call()
        return ("APPLIED", None, None)
    except m.MobileError.Conflict:
        return ("CONFLICT", "CONFLICT", None)
    except m.MobileError.Forbidden:
        return ("REJECTED", "FORBIDDEN", None)
    except m.MobileError.Invalid as e:
        return ("REJECTED", "VALIDATION", e.field)


def test_lifecycles_offline(m):
    """A hazard and a work order to closure with the bindings alone, as the app shows it."""
    field, managing = m.builtin_role_permissions("electrician"), m.builtin_role_permissions("manager")
    step = lambda status, action, who, **kw: m.hazard_transition(status, action, who, m.ActionInput(
        text=kw.get("text"), photos=kw.get("photos", []), passed=kw.get("passed", False))).status
    h = m.HazardStatus.OPEN
    h = step(h, m.HazardAction.ACKNOWLEDGE, field)
    h = step(h, m.HazardAction.DISPATCH, managing)
    h = step(h, m.HazardAction.RECTIFY, field, text="re-terminated", photos=["p1"])
    h = step(h, m.HazardAction.VERIFY, managing, text="still hot", passed=False)
    assert h == m.HazardStatus.DISPATCHED
    h = step(h, m.HazardAction.RECTIFY, field, text="replaced the lug", photos=["p2"])
    h = step(h, m.HazardAction.VERIFY, managing, passed=True)
    assert h == m.HazardStatus.CLOSED
    assert m.hazard_allowed_actions(h, managing) == []

    order = m.OrderState(status=m.WorkOrderStatus.PENDING, assigned=False, has_hazards=True)
    trail = []
    for action, who, assignee, text, photos in [
        (m.WorkOrderAction.TAKE, field, False, None, []),
        (m.WorkOrderAction.START, field, True, None, []),
        (m.WorkOrderAction.SUBMIT, field, True, "replaced the section", ["p1"]),
        (m.WorkOrderAction.REJECT, managing, False, "gland open", []),
        (m.WorkOrderAction.SUBMIT, field, True, "sealed the gland", ["p2"]),
        (m.WorkOrderAction.APPROVE, managing, False, None, []),
    ]:
        offered = [o.action for o in m.work_order_allowed_actions(order, who, assignee)]
        assert action in offered, (action, offered)
        status = m.work_order_transition(order, action, who, assignee, m.ActionInput(text=text, photos=photos, passed=False))
        order = m.OrderState(status=status, assigned=True, has_hazards=True)
        trail.append(m.work_order_status_code(status))
    assert trail == ["ACCEPTED", "IN_PROGRESS", "SUBMITTED", "IN_PROGRESS", "SUBMITTED", "APPROVED"]


def test_reading_classified(m):
    views = m.classify_reading(m.default_thresholds(), m.ReadingValues(
        leak_ma=[320.0, 250.0], temp_c=[41.5, None], voltage_v=[221.0, 219.0, 220.0], current_a=[10.2]), ["temp:2"], "zh-CN")
    assert [v.class_code for v in views] == ["ALARM", "PRE_ALARM", "NORMAL", "FAULT", "NORMAL", "NORMAL", "NORMAL", "NORMAL"]
    print("\n".join(v.summary for v in views))


def test_outbox_round_trip(m, server):
    electrician = server.login("electrician@demo.local")
    manager = server.login("manager@demo.local")
    field, managing = m.builtin_role_permissions("electrician"), m.builtin_role_permissions("manager")

    order = electrician.ok(ORDERS)["workOrders"]["nodes"][0]
    hazard_id = order["hazards"][0]["id"]
    state = m.OrderState(status=m.work_order_status_from_code(order["status"]), assigned=order["assignee"] is not None, has_hazards=True)
    offered = [o.code for o in m.work_order_allowed_actions(state, field, False)]
    rows = [("allowedActions before taking", order["allowedActions"], offered)]
    electrician.ok("mutation($id: ID!) { takeWorkOrder(id: $id) { id } }", {"id": order["id"]})
    state = m.OrderState(status=m.WorkOrderStatus.ACCEPTED, assigned=True, has_hazards=True)
    photo = electrician.upload_photo()
    project = electrician.ok("{ projects(first: 1) { nodes { id } } }")["projects"]["nodes"][0]["id"]
    hazard_state = m.hazard_status_from_code(order["hazards"][0]["status"])

    # Offline: queue, predicting each answer against the state expected after the ones before.
    outbox = m.Outbox()
    at = now()
    expected = []
    wo = lambda action, text=None, photos=(): lambda: m.work_order_transition(
        state, action, field, True, m.ActionInput(text=text, photos=list(photos), passed=False))
    start = m.new_client_id()
    expected.append(("start", predict(m, wo(m.WorkOrderAction.START))))
    outbox.start_work_order(start, at, order["id"])
    state = m.OrderState(status=m.WorkOrderStatus.IN_PROGRESS, assigned=True, has_hazards=True)
    expected.append(("start again", predict(m, wo(m.WorkOrderAction.START))))
    outbox.start_work_order(m.new_client_id(), at, order["id"])
    expected.append(("submit without a photo", predict(m, wo(m.WorkOrderAction.SUBMIT, "replaced the section"))))
    outbox.submit_work_order(m.new_client_id(), at, order["id"], "replaced the section", [])
    expected.append(("acknowledge the dispatched hazard", predict(m, lambda: m.hazard_transition(
        hazard_state, m.HazardAction.ACKNOWLEDGE, field, m.ActionInput(text=None, photos=[], passed=False)))))
    outbox.acknowledge_hazard(m.new_client_id(), at, hazard_id, None)
    report = m.HazardReport(project_id=project, detector_id=None, checkpoint_id=None,
                            description="Cover of the 3F junction box missing", attachment_ids=[electrician.upload_photo()], at=at)
    expected.append(("report a hazard", predict(m, lambda: m.check_hazard_report(report.description))))
    outbox.report_hazard(m.new_client_id(), at, report)
    expected.append(("submit with a photo", predict(m, wo(m.WorkOrderAction.SUBMIT, "replaced the section", [photo]))))
    outbox.submit_work_order(m.new_client_id(), at, order["id"], "replaced the section", [photo])

    stored = m.Outbox.from_bytes(outbox.to_bytes())  # the app restarted in the basement
    batch = stored.next_batch(1000)
    settled = stored.settle(batch.client_ids, electrician.raw(batch.query, json.loads(batch.variables_json)))
    for (what, predicted), s in zip(expected, settled):
        rows.append((what, (s.status, s.code, s.field), predicted))
    assert stored.is_empty(), stored.pending()
    assert [s.disposition for s in settled] == [m.SyncDisposition.DROP, m.SyncDisposition.SHOW_CURRENT, m.SyncDisposition.SHOW_ERROR,
                                                m.SyncDisposition.SHOW_CURRENT, m.SyncDisposition.DROP, m.SyncDisposition.DROP]
    reported = settled[4].entity_id

    # Forms the outbox refuses are refused by the server with the same field.
    for what, op, call in [
        ("blank report (refused when queued)", {"reportHazard": {"projectId": project, "description": " "}},
         lambda: outbox.report_hazard(m.new_client_id(), at, m.HazardReport(project_id=project, detector_id=None, checkpoint_id=None, description=" ", attachment_ids=[], at=None))),
        ("malformed QR (refused when queued)", {"checkIn": {"clientId": m.new_client_id(), "taskId": order["id"], "qrPayload": "SWQ1.nope", "at": at, "answers": []}},
         lambda: outbox.check_in(m.new_client_id(), at, order["id"], "SWQ1.nope", [], None, [], [])),
    ]:
        answer = electrician.ok(batch.query, {"operations": [dict(clientId=m.new_client_id(), at=at, **op)]})["syncFieldOperations"][0]
        rows.append((what, (answer["status"], answer["code"], answer["field"]), predict(m, call)))

    # A repeat, and the reported hazard acknowledged twice (the second leaves it as it is).
    second = m.Outbox()
    second.start_work_order(start, at, order["id"])
    second.acknowledge_hazard(m.new_client_id(), at, reported, None)
    second.acknowledge_hazard(m.new_client_id(), at, reported, "seen")
    batch = second.next_batch(10)
    settled = second.settle(batch.client_ids, electrician.raw(batch.query, json.loads(batch.variables_json)))
    again = m.hazard_transition(m.HazardStatus.ACKNOWLEDGED, m.HazardAction.ACKNOWLEDGE, field, m.ActionInput(text=None, photos=[], passed=False))
    rows.append(("repeat of the first start", settled[0].status, "DUPLICATE"))
    rows.append(("acknowledge the reported hazard", settled[1].status, "APPLIED"))
    rows.append(("acknowledge it again (unchanged)", (settled[2].status, again.changed), ("APPLIED", False)))

    # The manager verifies: what the server offers and does is what the bindings say.
    state = m.OrderState(status=m.WorkOrderStatus.SUBMITTED, assigned=True, has_hazards=True)
    now_order = next(o for o in manager.ok(ORDERS)["workOrders"]["nodes"] if o["id"] == order["id"])
    rows.append(("allowedActions of the manager", now_order["allowedActions"], [o.code for o in m.work_order_allowed_actions(state, managing, False)]))
    rows.append(("hazard after the submission", now_order["hazards"][0]["status"], "RECTIFIED"))
    approved = manager.ok("mutation($id: ID!) { approveWorkOrder(id: $id) { status hazards { status } } }", {"id": order["id"]})["approveWorkOrder"]
    predicted_order = m.work_order_status_code(m.work_order_transition(state, m.WorkOrderAction.APPROVE, managing, False, m.ActionInput(text=None, photos=[], passed=False)))
    predicted_hazard = m.hazard_status_code(m.hazard_transition(m.HazardStatus.RECTIFIED, m.HazardAction.VERIFY, managing, m.ActionInput(text=None, photos=[], passed=True)).status)
    rows.append(("approve the order", (approved["status"], approved["hazards"][0]["status"]), (predicted_order, predicted_hazard)))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'case':{width}}  {'server':42}  bindings")
    for what, server_said, bindings_said in rows:
        server_said = tuple(server_said) if isinstance(server_said, (list, tuple)) else server_said
        bindings_said = tuple(bindings_said) if isinstance(bindings_said, (list, tuple)) else bindings_said
        mark = "" if server_said == bindings_said else "   <-- DIFFERENT"
        print(f"{what:{width}}  {str(server_said):42}  {bindings_said}{mark}")
    different = [r for r in rows if (tuple(r[1]) if isinstance(r[1], (list, tuple)) else r[1]) != (tuple(r[2]) if isinstance(r[2], (list, tuple)) else r[2])]
    print(f"python round trip: {len(rows)} cases, {len(different)} different")
    assert not different
