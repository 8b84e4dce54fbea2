// The field app's rules on the JVM through the generated Kotlin bindings (JNA):
// the shared case table (mobile-bindings/tests/cases.json, also checked against the server's
// rules in Rust), a hazard and a work order driven through their lifecycles, a reading
// classified, and an outbox batch round-tripped through the real server's
// syncFieldOperations (SPARKWATCH_URL), each answer compared with the bindings' prediction.
// Run by tests/tests/mobile.rs (kotlinc from npm `kotlin-compiler`, JNA from Debian).

import com.sparkwatch.mobile.*
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.time.Instant
import java.time.temporal.ChronoUnit
import kotlin.system.exitProcess

// ---- a small JSON reader (the test has no JSON library on its classpath) ----

class Json(private val s: String) {
    private var i = 0
    fun parse(): Any? { val v = value(); ws(); require(i == s.length) { "trailing text at $i" }; return v }
    private fun ws() { while (i < s.length && s[i].isWhitespace()) i++ }
    private fun value(): Any? {
        ws()
        return when (s[i]) {
            '{' -> { i++; val m = LinkedHashMap<String, Any?>(); ws()
                if (s[i] == '}') { i++; return m }
                while (true) { ws(); val k = str(); ws(); require(s[i++] == ':'); m[k] = value(); ws()
                    if (s[i++] == '}') return m } ; @Suppress("UNREACHABLE_CODE") m }
            '[' -> { i++; val l = ArrayList<Any?>(); ws()
                if (s[i] == ']') { i++; return l }
                while (true) { l.add(value()); ws(); if (s[i++] == ']') return l } ; @Suppress("UNREACHABLE_CODE") l }
            '"' -> str()
            't' -> { i += 4; true }
            'f' -> { i += 5; false }
            'n' -> { i += 4; null }
            else -> { val start = i; while (i < s.length && (s[i].isDigit() || s[i] in "+-.eE")) i++; s.substring(start, i).toDouble() }
        }
    }
    private fun str(): String {
        require(s[i++] == '"'); val b = StringBuilder()
        while (s[i] != '"') {
            if (s[i] == '\\') { i++
                when (s[i]) { 'n' -> b.append('\n'); 't' -> b.append('\t'); 'r' -> b.append('\r'); 'b' -> b.append('\b'); 'f' -> b.append('\u000c')
                    'u' -> { b.append(s.substring(i + 1, i + 5).toInt(16).toChar()); i += 4 }
                    else -> b.append(s[i]) }
                i++
            } else b.append(s[i++])
        }
        i++; return b.toString()
    }
}

fun quote(v: String) = "\"" + v.replace("\\", "\\\\").replace("\"", "\\\"") + "\""

@Suppress("UNCHECKED_CAST") fun Any?.obj() = this as Map<String, Any?>
@Suppress("UNCHECKED_CAST") fun Any?.arr() = this as List<Any?>
fun Any?.at(vararg path: Any): Any? = path.fold(this) { v, k -> if (k is Int) v.arr()[k] else v.obj()[k as String] }

// ---- the table ----

val rows = mutableListOf<Triple<String, Any?, Any?>>()
fun row(what: String, got: Any?, expected: Any?) = rows.add(Triple(what, got, expected))

fun outcome(call: () -> String): String = try { call() } catch (e: MobileException.Invalid) { "VALIDATION:${e.field}" }
    catch (e: MobileException.Forbidden) { "FORBIDDEN" } catch (e: MobileException.Conflict) { "CONFLICT" }

fun perms(role: Any?) = builtinRolePermissions(role as String)
fun photos(n: Any?) = List((n as Double).toInt()) { "photo" }

fun caseTable(cases: Any?) {
    for (c in cases.at("hazard").arr()) {
        val input = ActionInput(c.at("text") as String?, photos(c.at("photos")), c.at("passed") as Boolean)
        val got = outcome {
            val step = hazardTransition(hazardStatusFromCode(c.at("from") as String), HazardAction.valueOf(c.at("action") as String), perms(c.at("role")), input)
            if (step.changed) hazardStatusCode(step.status) else "UNCHANGED"
        }
        row("hazard ${c.at("from")} ${c.at("action")} by ${c.at("role")}", got, c.at("expect"))
    }
    for (c in cases.at("hazardActions").arr()) {
        val got = hazardAllowedActions(hazardStatusFromCode(c.at("from") as String), perms(c.at("role"))).map { it.code }
        row("hazard ${c.at("from")} actions for ${c.at("role")}", got, c.at("expect"))
    }
    for (c in cases.at("workOrder").arr()) {
        val state = OrderState(workOrderStatusFromCode(c.at("status") as String), c.at("assigned") as Boolean, c.at("hasHazards") as Boolean)
        val input = ActionInput(c.at("text") as String?, photos(c.at("photos")), false)
        val got = outcome { workOrderStatusCode(workOrderTransition(state, WorkOrderAction.valueOf(c.at("action") as String), perms(c.at("role")), c.at("assignee") as Boolean, input)) }
        row("order ${c.at("status")} ${c.at("action")} by ${c.at("role")}", got, c.at("expect"))
    }
    for (c in cases.at("workOrderActions").arr()) {
        val state = OrderState(workOrderStatusFromCode(c.at("status") as String), c.at("assigned") as Boolean, c.at("hasHazards") as Boolean)
        row("order ${c.at("status")} actions for ${c.at("role")}", workOrderAllowedActions(state, perms(c.at("role")), c.at("assignee") as Boolean).map { it.code }, c.at("expect"))
    }
    for (c in cases.at("patrolTask").arr()) {
        val status = patrolTaskStatusFromCode(c.at("status") as String)
        val due = c.at("dueAt") as String; val at = c.at("at") as String
        row("task ${c.at("status")} at $at by ${c.at("role")}: actions", patrolTaskActions(status, due, at, perms(c.at("role")), c.at("onPlan") as Boolean), c.at("actions"))
        val after = outcome { patrolTaskAfterCheckIn(status, due, at, (c.at("checked") as Double).toInt().toUInt(), (c.at("total") as Double).toInt().toUInt()).name }
        row("task ${c.at("status")} at $at by ${c.at("role")}: check-in", after, c.at("expect"))
    }
}

fun lifecycles() {
    val field = builtinRolePermissions("electrician"); val managing = builtinRolePermissions("manager")
    fun step(s: HazardStatus, a: HazardAction, who: List<String>, text: String? = null, photos: List<String> = listOf(), passed: Boolean = false) =
        hazardTransition(s, a, who, ActionInput(text, photos, passed)).status
    var h = HazardStatus.OPEN
    h = step(h, HazardAction.ACKNOWLEDGE, field)
    h = step(h, HazardAction.DISPATCH, managing)
    h = step(h, HazardAction.RECTIFY, field, "re-terminated", listOf("p1"))
    h = step(h, HazardAction.VERIFY, managing, "still hot", passed = false)
    val back = h
    h = step(h, HazardAction.RECTIFY, field, "replaced the lug", listOf("p2"))
    h = step(h, HazardAction.VERIFY, managing, passed = true)
    row("hazard lifecycle (offline)", listOf(back.name, h.name), listOf("DISPATCHED", "CLOSED"))

    var order = OrderState(WorkOrderStatus.PENDING, false, true)
    val trail = mutableListOf<String>()
    for ((action, who, assignee, text) in listOf(
        listOf(WorkOrderAction.TAKE, field, false, null), listOf(WorkOrderAction.START, field, true, null),
        listOf(WorkOrderAction.SUBMIT, field, true, "replaced the section"), listOf(WorkOrderAction.REJECT, managing, false, "gland open"),
        listOf(WorkOrderAction.SUBMIT, field, true, "sealed the gland"), listOf(WorkOrderAction.APPROVE, managing, false, null))) {
        @Suppress("UNCHECKED_CAST") val perms = who as List<String>
        val offered = workOrderAllowedActions(order, perms, assignee as Boolean).map { it.action }
        check(action in offered) { "$action not offered: $offered" }
        val status = workOrderTransition(order, action as WorkOrderAction, perms, assignee, ActionInput(text as String?, listOf("p"), false))
        order = OrderState(status, true, true)
        trail.add(workOrderStatusCode(status))
    }
    row("work-order lifecycle (offline)", trail, listOf("ACCEPTED", "IN_PROGRESS", "SUBMITTED", "IN_PROGRESS", "SUBMITTED", "APPROVED"))

    val views = classifyReading(defaultThresholds(), ReadingValues(listOf(320.0, 250.0), listOf(41.5, null), listOf(221.0, 80.0, 220.0), listOf()), listOf("temp:2"), "en")
    views.forEach { println(it.summary) }
    row("reading classified", views.map { it.classCode }, listOf("ALARM", "PRE_ALARM", "NORMAL", "FAULT", "NORMAL", "ALARM", "NORMAL"))
}

// ---- the real server ----

class Api(val base: String, val token: String? = null) {
    private val http = HttpClient.newHttpClient()
    fun post(path: String, body: ByteArray, type: String): String {
        val req = HttpRequest.newBuilder(URI.create(base + path)).header("Content-Type", type)
        token?.let { req.header("Authorization", "Bearer $it") }
        return http.send(req.POST(HttpRequest.BodyPublishers.ofByteArray(body)).build(), HttpResponse.BodyHandlers.ofString()).body()
    }
    fun raw(query: String, variables: String = "{}") = post("/graphql", "{\"query\":${quote(query)},\"variables\":$variables}".toByteArray(), "application/json")
    fun ok(query: String, variables: String = "{}"): Any? {
        val res = Json(raw(query, variables)).parse()
        check(res.obj()["errors"] == null) { "errors: $res" }
        return res.at("data")
    }
    fun login(login: String) = Api(base, ok("mutation(\$i: LoginInput!) { login(input: \$i) { accessToken } }",
        "{\"i\":{\"login\":${quote(login)},\"password\":\"sparkwatch-demo\"}}").at("login", "accessToken") as String)
    fun uploadPhoto(): String {
        val png = byteArrayOf(0x89.toByte(), 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 0x0D, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0, 0x90.toByte(), 0x77, 0x53, 0xDE.toByte())
        val b = "sparkwatch-boundary"
        val body = "--$b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fix.png\"\r\nContent-Type: image/png\r\n\r\n".toByteArray() + png + "\r\n--$b--\r\n".toByteArray()
        return Json(post("/attachments", body, "multipart/form-data; boundary=$b")).parse().at("id") as String
    }
}

fun predict(call: () -> Unit): List<String?> = try { call(); listOf("APPLIED", null, null) }
    catch (e: MobileException.Conflict) { listOf("CONFLICT", "CONFLICT", null) }
    catch (e: MobileException.Forbidden) { listOf("REJECTED", "FORBIDDEN", null) }
    catch (e: MobileException.Invalid) { listOf("REJECTED", "VALIDATION", e.field) }

const val ORDERS = "{ workOrders(first: 10) { nodes { id status assignee { id } allowedActions hazards { id status } } } }"

fun roundTrip(base: String) {
    val server = Api(base)
    val electrician = server.login("electrician@demo.local")
    val manager = server.login("manager@demo.local")
    val field = builtinRolePermissions("electrician"); val managing = builtinRolePermissions("manager")
    val order = electrician.ok(ORDERS).at("workOrders", "nodes", 0)
    val orderId = order.at("id") as String
    val hazardId = order.at("hazards", 0, "id") as String
    var state = OrderState(workOrderStatusFromCode(order.at("status") as String), order.at("assignee") != null, true)
    row("allowedActions before taking", order.at("allowedActions"), workOrderAllowedActions(state, field, false).map { it.code })
    electrician.ok("mutation(\$id: ID!) { takeWorkOrder(id: \$id) { id } }", "{\"id\":${quote(orderId)}}")
    state = OrderState(WorkOrderStatus.ACCEPTED, true, true)
    val photo = electrician.uploadPhoto()
    val project = electrician.ok("{ projects(first: 1) { nodes { id } } }").at("projects", "nodes", 0, "id") as String
    val hazardState = hazardStatusFromCode(order.at("hazards", 0, "status") as String)

    val at = Instant.now().truncatedTo(ChronoUnit.SECONDS).toString()
    val outbox = Outbox()
    val expected = mutableListOf<Pair<String, List<String?>>>()
    fun wo(a: WorkOrderAction, text: String? = null, p: List<String> = listOf()) = { workOrderTransition(state, a, field, true, ActionInput(text, p, false)); Unit }
    val start = newClientId()
    expected.add("start" to predict(wo(WorkOrderAction.START))); outbox.startWorkOrder(start, at, orderId)
    state = OrderState(WorkOrderStatus.IN_PROGRESS, true, true)
    expected.add("start again" to predict(wo(WorkOrderAction.START))); outbox.startWorkOrder(newClientId(), at, orderId)
    expected.add("submit without a photo" to predict(wo(WorkOrderAction.SUBMIT, "replaced the section")))
    outbox.submitWorkOrder(newClientId(), at, orderId, "replaced the section", listOf())
    expected.add("acknowledge the dispatched hazard" to predict { hazardTransition(hazardState, HazardAction.ACKNOWLEDGE, field, ActionInput(null, listOf(), false)) })
    outbox.acknowledgeHazard(newClientId(), at, hazardId, null)
    val report = HazardReport(project, null, null, "Cable tray cover loose on B2", listOf(), at)
    expected.add("report a hazard" to predict { checkHazardReport(report.description) }); outbox.reportHazard(newClientId(), at, report)
    expected.add("submit with a photo" to predict(wo(WorkOrderAction.SUBMIT, "replaced the section", listOf(photo))))
    outbox.submitWorkOrder(newClientId(), at, orderId, "replaced the section", listOf(photo))

    val stored = Outbox.fromBytes(outbox.toBytes())
    val batch = stored.nextBatch(1000u)
    val settled = stored.settle(batch.clientIds, electrician.raw(batch.query, batch.variablesJson))
    for ((e, s) in expected.zip(settled)) row(e.first, listOf(s.status, s.code, s.field), e.second)
    row("outbox empty after settling", stored.len().toInt(), 0)
    row("dispositions", settled.map { it.disposition.name }, listOf("DROP", "SHOW_CURRENT", "SHOW_ERROR", "SHOW_CURRENT", "DROP", "DROP"))

    val again = Outbox(); again.startWorkOrder(start, at, orderId)
    val b2 = again.nextBatch(10u)
    row("repeat of the first start", again.settle(b2.clientIds, electrician.raw(b2.query, b2.variablesJson)).map { it.status }, listOf("DUPLICATE"))

    state = OrderState(WorkOrderStatus.SUBMITTED, true, true)
    val now = manager.ok(ORDERS).at("workOrders", "nodes").arr().first { it.at("id") == orderId }
    row("allowedActions of the manager", now.at("allowedActions"), workOrderAllowedActions(state, managing, false).map { it.code })
    val approved = manager.ok("mutation(\$id: ID!) { approveWorkOrder(id: \$id) { status hazards { status } } }", "{\"id\":${quote(orderId)}}").at("approveWorkOrder")
    val predictedOrder = workOrderStatusCode(workOrderTransition(state, WorkOrderAction.APPROVE, managing, false, ActionInput(null, listOf(), false)))
    val predictedHazard = hazardStatusCode(hazardTransition(HazardStatus.RECTIFIED, HazardAction.VERIFY, managing, ActionInput(null, listOf(), true)).status)
    row("approve the order", listOf(approved.at("status"), approved.at("hazards", 0, "status")), listOf(predictedOrder, predictedHazard))
}

fun main() {
    val cases = Json(java.io.File(System.getenv("SPARKWATCH_CASES") ?: "mobile-bindings/tests/cases.json").readText()).parse()
    caseTable(cases)
    lifecycles()
    val base = System.getenv("SPARKWATCH_URL")
    if (base == null) println("server round trip skipped: SPARKWATCH_URL is not set") else roundTrip(base.trimEnd('/'))
    var different = 0
    for ((what, got, expected) in rows) {
        val same = got == expected
        if (!same) different++
        println("${if (same) "same     " else "DIFFERENT"} $what: bindings/server $got, expected $expected")
    }
    println("kotlin: ${rows.size} cases, $different different")
    println("${rows.size - different} passed, $different failed")
    exitProcess(if (different == 0) 0 else 1)
}
