//! Bulk onboarding of devices and detectors from a CSV export: one row per detector, the
//! device columns repeated on every row of the same device.
//!
//! The work is split in three steps so that nothing is ever half-imported:
//! 1. [`parse_csv`] reads the file into [`ImportRow`]s and checks the header (pure).
//! 2. [`Services::import_devices`] opens one transaction and checks every row: cell formats,
//!    the domain rules (`DeviceInput::validate`, `DetectorInput::validate`), the project name,
//!    serials already registered, devices whose rows disagree and duplicate bus addresses.
//!    Every problem of every row is collected as a [`RowError`].
//! 3. Only when no row has a problem are the devices and detectors inserted, with one
//!    operation-log entry per created object plus one `import.devices` summary entry, and the
//!    transaction committed. Any problem rolls everything back.
//!
//! The file format is documented in `docs/IMPORT.md`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use sea_orm::ConnectionTrait;
use sparkwatch_domain::ValidationError;
use sparkwatch_domain::access::Permission;
use sparkwatch_domain::ids::{DeviceId, ProjectId, TenantId};
use sparkwatch_domain::site::{DetectorDraft, DetectorInput, DeviceDraft, DeviceInput, DeviceTransport};
use uuid::Uuid;

use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::AppError;
use crate::store::oplog::Entry;
use crate::store::sites as st;

/// Every column the file may have, in the order of the documentation.
pub const COLUMNS: [&str; 19] = [
    "project",
    "serial",
    "device_name",
    "model",
    "device_type",
    "transport",
    "host",
    "port",
    "interval_s",
    "device_region",
    "device_position",
    "address",
    "detector_name",
    "detector_region",
    "detector_position",
    "leak_channels",
    "temp_channels",
    "has_voltage",
    "has_current",
];

/// Columns that must be present in the header and non-empty on every row.
pub const REQUIRED_COLUMNS: [&str; 5] = ["project", "serial", "device_name", "transport", "address"];

/// Columns that describe the device; all rows of one serial must agree on them.
pub const DEVICE_COLUMNS: [&str; 11] = [
    "project",
    "serial",
    "device_name",
    "model",
    "device_type",
    "transport",
    "host",
    "port",
    "interval_s",
    "device_region",
    "device_position",
];

/// At most this many problems are spelled out in an error message; the rest are counted.
pub const MAX_REPORTED_ERRORS: usize = 50;

/// One data row of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportRow {
    /// Line of the file the row starts on (the header is line 1).
    pub line: u64,
    /// Non-empty, trimmed cells by column name (one of [`COLUMNS`]).
    cells: HashMap<&'static str, String>,
    /// Why the row could not be read as cells (bad UTF-8, too many cells); reported with the
    /// other rows' problems.
    unreadable: Option<String>,
}

impl ImportRow {
    /// The trimmed cell of `column`, or `None` when it is empty or the column is absent.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.cells.get(column).map(String::as_str)
    }
}

/// A problem with one row (or with the header, line 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// Line of the file.
    pub line: u64,
    /// CSV column name, when the problem is in one cell.
    pub column: Option<String>,
    /// What is wrong, for a person to read.
    pub reason: String,
}

impl RowError {
    fn cell(line: u64, column: &str, reason: impl fmt::Display) -> Self {
        RowError { line, column: Some(column.to_owned()), reason: reason.to_string() }
    }

    fn row(line: u64, reason: impl fmt::Display) -> Self {
        RowError { line, column: None, reason: reason.to_string() }
    }
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "row {}, column {c}: {}", self.line, self.reason),
            None => write!(f, "row {}: {}", self.line, self.reason),
        }
    }
}

/// Why an import did not happen. Nothing was stored in either case.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file has problems; every one found is listed, in file order.
    #[error("{}", list_errors(.0))]
    Rows(Vec<RowError>),
    /// The import could not run (database, permissions…).
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<sea_orm::DbErr> for ImportError {
    fn from(err: sea_orm::DbErr) -> Self {
        ImportError::App(err.into())
    }
}

fn list_errors(errors: &[RowError]) -> String {
    let n = errors.len();
    let mut out = format!("{n} {} in the file; nothing was imported:", if n == 1 { "problem" } else { "problems" });
    for e in errors.iter().take(MAX_REPORTED_ERRORS) {
        out.push_str("\n  ");
        out.push_str(&e.to_string());
    }
    if n > MAX_REPORTED_ERRORS {
        out.push_str(&format!("\n  … and {} more", n - MAX_REPORTED_ERRORS));
    }
    out
}

/// What an import created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Devices created.
    pub devices: usize,
    /// Detectors created.
    pub detectors: usize,
    /// Distinct projects the devices went into.
    pub projects: usize,
}

/// The long-running steps of an import, for progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportStage {
    /// Checking rows; counted in rows.
    Validating,
    /// Creating devices with their detectors; counted in devices.
    Inserting,
}

impl ImportStage {
    /// A short label for a progress bar.
    pub const fn label(self) -> &'static str {
        match self {
            ImportStage::Validating => "checking",
            ImportStage::Inserting => "importing",
        }
    }
}

/// Receives progress of an import; every method defaults to doing nothing.
pub trait ImportProgress: Send + Sync {
    /// A stage starts with `total` steps.
    fn begin(&self, _stage: ImportStage, _total: u64) {}
    /// One step of the stage is done.
    fn advance(&self, _stage: ImportStage) {}
    /// The stage completed.
    fn end(&self, _stage: ImportStage) {}
}

/// No progress display.
impl ImportProgress for () {}

/// Reads CSV text into rows and checks its header.
///
/// Header names are case-insensitive, in any order; spaces and dashes count as `_`. Unknown,
/// repeated or missing required columns are errors at line 1 (and stop reading). Cells are
/// trimmed; empty cells mean "not given"; rows whose cells are all empty are skipped. A leading
/// UTF-8 byte-order mark (as written by spreadsheet programs) is ignored. Rows that cannot be
/// read (not UTF-8, more cells than columns) are kept and reported by
/// [`Services::import_devices`] together with the other rows' problems.
pub fn parse_csv(data: &[u8]) -> Result<Vec<ImportRow>, ImportError> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(data);
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).trim(csv::Trim::All).from_reader(data);
    let mut records = reader.records();

    let header = match records.next() {
        None => return Err(ImportError::Rows(vec![RowError::row(1, "the file is empty; it needs a header row")])),
        Some(Err(e)) => return Err(ImportError::Rows(vec![csv_error(data, 1, &e)])),
        Some(Ok(h)) => h,
    };
    let header_line = header.position().map_or(1, |p| line_of(data, p));
    let mut columns: Vec<&'static str> = Vec::with_capacity(header.len());
    let mut errors = Vec::new();
    let mut unknown = Vec::new();
    for name in &header {
        let key = name.to_lowercase().replace([' ', '-'], "_");
        match COLUMNS.iter().find(|c| **c == key) {
            Some(c) if columns.contains(c) => errors.push(RowError::cell(header_line, c, "appears more than once")),
            Some(c) => columns.push(c),
            // Spreadsheets often export trailing empty columns; they may stay empty.
            None if key.is_empty() => columns.push(""),
            None => {
                unknown.push(format!("`{name}`"));
                columns.push("");
            }
        }
    }
    if !unknown.is_empty() {
        errors.push(RowError::row(
            header_line,
            format!(
                "unknown {} {}; the columns are: {}",
                if unknown.len() == 1 { "column" } else { "columns" },
                unknown.join(", "),
                COLUMNS.join(", ")
            ),
        ));
    }
    for required in REQUIRED_COLUMNS {
        if !columns.contains(&required) {
            errors.push(RowError::cell(header_line, required, "is required but missing from the header"));
        }
    }
    if !errors.is_empty() {
        return Err(ImportError::Rows(errors));
    }

    let mut rows = Vec::new();
    for (index, record) in records.enumerate() {
        let record = match record {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(_)) => {
                return Err(ImportError::App(AppError::Internal(format!("reading the CSV data: {e}"))));
            }
            Err(e) => {
                // `index + 2` is only a fallback: the reader reports the line of bad records.
                let RowError { line, reason, .. } = csv_error(data, index as u64 + 2, &e);
                rows.push(ImportRow { line, cells: HashMap::new(), unreadable: Some(reason) });
                continue;
            }
        };
        let line = record.position().map_or(index as u64 + 2, |p| line_of(data, p));
        if record.iter().all(str::is_empty) {
            continue;
        }
        let unreadable = if record.len() > columns.len() && record.iter().skip(columns.len()).any(|c| !c.is_empty()) {
            Some(format!("has {} cells but the header has only {} columns", record.len(), columns.len()))
        } else {
            columns
                .iter()
                .zip(record.iter())
                .position(|(c, v)| c.is_empty() && !v.is_empty())
                .map(|i| format!("has a value in column {}, which has no header", i + 1))
        };
        let cells =
            columns.iter().zip(record.iter()).filter(|(_, v)| !v.is_empty()).map(|(c, v)| (*c, v.to_owned())).collect();
        rows.push(ImportRow { line, cells, unreadable });
    }
    if rows.is_empty() {
        return Err(ImportError::Rows(vec![RowError::row(header_line, "the file has a header but no data rows")]));
    }
    Ok(rows)
}

/// The line a record really starts on: the reader reports where it started looking, which is
/// before any blank lines it skipped.
fn line_of(data: &[u8], position: &csv::Position) -> u64 {
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    let skipped = data.get(start..).unwrap_or_default().iter().take_while(|b| matches!(b, b'\n' | b'\r'));
    position.line() + skipped.filter(|b| **b == b'\n').count() as u64
}

fn csv_error(data: &[u8], fallback_line: u64, e: &csv::Error) -> RowError {
    let line = e.position().map_or(fallback_line, |p| line_of(data, p));
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => RowError::row(line, "is not valid UTF-8 text; save the sheet as \"CSV UTF-8\""),
        _ => RowError::row(line, format!("cannot be read: {e}")),
    }
}

/// The CSV column a domain validation error of a device field belongs to.
fn device_column(field: &str) -> &str {
    match field {
        "serial" => "serial",
        "name" => "device_name",
        "model" => "model",
        "deviceType" => "device_type",
        "transport" => "transport",
        "host" => "host",
        "port" => "port",
        "intervalS" => "interval_s",
        "region" => "device_region",
        "position" => "device_position",
        other => other,
    }
}

/// The CSV column a domain validation error of a detector field belongs to.
fn detector_column(field: &str) -> &str {
    match field {
        "address" => "address",
        "name" => "detector_name",
        "region" => "detector_region",
        "position" => "detector_position",
        "leakChannels" => "leak_channels",
        "tempChannels" => "temp_channels",
        "hasVoltage" => "has_voltage",
        "hasCurrent" => "has_current",
        other => other,
    }
}

/// Parses a whole-number cell; `Err` after recording the problem.
fn int_cell(row: &ImportRow, column: &str, errors: &mut Vec<RowError>) -> Result<Option<i64>, ()> {
    match row.get(column) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| errors.push(RowError::cell(row.line, column, format!("`{v}` is not a whole number")))),
    }
}

/// Parses a yes/no cell; `Err` after recording the problem.
fn bool_cell(row: &ImportRow, column: &str, errors: &mut Vec<RowError>) -> Result<Option<bool>, ()> {
    match row.get(column) {
        None => Ok(None),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Some(true)),
            "false" | "no" | "0" => Ok(Some(false)),
            _ => {
                errors.push(RowError::cell(row.line, column, format!("`{v}` is not one of true/false, yes/no, 1/0")));
                Err(())
            }
        },
    }
}

/// A device column's value in a form where equivalent spellings compare equal.
fn comparable(row: &ImportRow, column: &str) -> String {
    let v = row.get(column).unwrap_or("");
    match column {
        "transport" => DeviceTransport::parse(column, v).map_or_else(|_| v.to_owned(), |t| t.code().to_owned()),
        "port" | "interval_s" => v.parse::<i64>().map_or_else(|_| v.to_owned(), |n| n.to_string()),
        _ => v.to_owned(),
    }
}

fn shown(v: &str) -> String {
    if v.is_empty() { "(empty)".to_owned() } else { format!("`{v}`") }
}

/// A device ready to insert, with its detectors.
struct PlannedDevice {
    line: u64,
    draft: DeviceDraft,
    detectors: Vec<(u64, DetectorDraft)>,
}

/// What the file describes, once every row is known to be good.
struct Plan {
    devices: Vec<PlannedDevice>,
    detectors: usize,
    projects: usize,
}

/// The first row of a serial and what was learnt from it.
struct SeenDevice {
    first_line: u64,
    values: Vec<String>,
    planned: Option<usize>,
    addresses: HashMap<u8, u64>,
}

/// Checks every row, reading projects and registered serials through `db`; returns the plan or
/// every problem found.
async fn check_rows<C: ConnectionTrait>(
    db: &C,
    who: &Principal,
    tenant: TenantId,
    rows: &[ImportRow],
    progress: &dyn ImportProgress,
) -> Result<Result<Plan, Vec<RowError>>, ImportError> {
    let placeholder_project = ProjectId::from_uuid(Uuid::nil());
    let placeholder_device = DeviceId::from_uuid(Uuid::nil());
    let mut errors: Vec<RowError> = Vec::new();
    let mut projects: HashMap<String, Option<ProjectId>> = HashMap::new();
    let mut seen: HashMap<String, SeenDevice> = HashMap::new();
    let mut planned: Vec<PlannedDevice> = Vec::new();
    let mut detector_count = 0;

    progress.begin(ImportStage::Validating, rows.len() as u64);
    for row in rows {
        let line = row.line;
        if let Some(reason) = &row.unreadable {
            errors.push(RowError::row(line, reason));
            progress.advance(ImportStage::Validating);
            continue;
        }
        let errors_before = errors.len();
        let mut missing = Vec::new();
        for column in REQUIRED_COLUMNS {
            if row.get(column).is_none() {
                errors.push(RowError::cell(line, column, "is required"));
                missing.push(column);
            }
        }
        let port = int_cell(row, "port", &mut errors);
        let interval_s = int_cell(row, "interval_s", &mut errors);
        let address = int_cell(row, "address", &mut errors);
        let leak_channels = int_cell(row, "leak_channels", &mut errors);
        let temp_channels = int_cell(row, "temp_channels", &mut errors);
        let has_voltage = bool_cell(row, "has_voltage", &mut errors);
        let has_current = bool_cell(row, "has_current", &mut errors);

        // ---- the device: checked on its first row, compared on the others ----
        if let Some(serial) = row.get("serial") {
            if let Some(first) = seen.get(serial) {
                for (column, there) in DEVICE_COLUMNS.iter().zip(&first.values) {
                    let here = comparable(row, column);
                    if here != *there && !missing.contains(column) {
                        errors.push(RowError::cell(
                            line,
                            column,
                            format!(
                                "is {} here but {} on row {}, the first row of device `{serial}`; all rows of a device must agree",
                                shown(&here),
                                shown(there),
                                first.first_line
                            ),
                        ));
                    }
                }
            } else {
                let project_id = match row.get("project") {
                    None => None,
                    Some(name) => {
                        let id = match projects.get(name) {
                            Some(id) => *id,
                            None => {
                                let found = st::project_by_name(db, tenant, name)
                                    .await?
                                    .map(|p| p.id)
                                    .filter(|id| who.sees_project(*id));
                                projects.insert(name.to_owned(), found);
                                found
                            }
                        };
                        if id.is_none() {
                            errors.push(RowError::cell(
                                line,
                                "project",
                                format!("there is no project named `{name}` in this tenant"),
                            ));
                        }
                        id
                    }
                };
                let mut draft = None;
                let device_missing = missing.iter().any(|c| DEVICE_COLUMNS.contains(c));
                if let (false, Ok(port), Ok(interval_s)) = (device_missing, port, interval_s) {
                    let input = DeviceInput {
                        serial: serial.to_owned(),
                        name: row.get("device_name").unwrap_or_default().to_owned(),
                        model: row.get("model").map(str::to_owned),
                        device_type: row.get("device_type").map(str::to_owned),
                        transport: row.get("transport").unwrap_or_default().to_owned(),
                        host: row.get("host").map(str::to_owned),
                        port,
                        interval_s,
                        region: row.get("device_region").map(str::to_owned),
                        position: row.get("device_position").map(str::to_owned),
                    };
                    match input.validate(project_id.unwrap_or(placeholder_project)) {
                        Ok(d) => draft = Some(d),
                        Err(ValidationError { field, reason }) => {
                            errors.push(RowError::cell(line, device_column(&field), reason))
                        }
                    }
                }
                if let Some(d) = &draft
                    && st::serial_taken(db, &d.serial).await?
                {
                    errors.push(RowError::cell(
                        line,
                        "serial",
                        format!("a device with serial `{}` is already registered", d.serial),
                    ));
                }
                let planned_index = match (draft, project_id) {
                    (Some(draft), Some(_)) => {
                        planned.push(PlannedDevice { line, draft, detectors: Vec::new() });
                        Some(planned.len() - 1)
                    }
                    _ => None,
                };
                let values = DEVICE_COLUMNS.iter().map(|c| comparable(row, c)).collect();
                seen.insert(
                    serial.to_owned(),
                    SeenDevice { first_line: line, values, planned: planned_index, addresses: HashMap::new() },
                );
            }
        }

        // ---- the detector ----
        if let (Ok(Some(address)), Ok(leak_channels), Ok(temp_channels), Ok(has_voltage), Ok(has_current)) =
            (address, leak_channels, temp_channels, has_voltage, has_current)
        {
            let input = DetectorInput {
                address,
                name: row.get("detector_name").map(str::to_owned),
                region: row.get("detector_region").map(str::to_owned),
                position: row.get("detector_position").map(str::to_owned),
                leak_channels,
                temp_channels,
                has_voltage,
                has_current,
            };
            match input.validate(placeholder_device) {
                Err(ValidationError { field, reason }) => {
                    errors.push(RowError::cell(line, detector_column(&field), reason))
                }
                Ok(draft) => {
                    if let Some(device) = row.get("serial").and_then(|s| seen.get_mut(s)) {
                        if let Some(previous) = device.addresses.get(&draft.address) {
                            errors.push(RowError::cell(
                                line,
                                "address",
                                format!(
                                    "duplicates row {previous}: the device already has a detector at address {}",
                                    draft.address
                                ),
                            ));
                        } else {
                            device.addresses.insert(draft.address, line);
                            if let (Some(i), true) = (device.planned, errors.len() == errors_before) {
                                planned[i].detectors.push((line, draft));
                                detector_count += 1;
                            }
                        }
                    }
                }
            }
        }
        progress.advance(ImportStage::Validating);
    }
    progress.end(ImportStage::Validating);

    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    let projects = planned.iter().map(|d| d.draft.project_id).collect::<BTreeSet<_>>().len();
    Ok(Ok(Plan { devices: planned, detectors: detector_count, projects }))
}

/// A failed insert: a unique constraint means someone registered the same thing meanwhile.
fn insert_error(err: sea_orm::DbErr, line: u64, column: &str, reason: &str) -> ImportError {
    match AppError::from(err) {
        AppError::Conflict(_) => ImportError::Rows(vec![RowError::cell(line, column, reason)]),
        other => ImportError::App(other),
    }
}

impl Services {
    /// Imports devices and detectors from parsed rows into the caller's tenant, all or nothing.
    ///
    /// Every row is checked first (see the module documentation); if any row has a problem,
    /// nothing is stored and [`ImportError::Rows`] lists every problem. Otherwise all devices
    /// and detectors are created in one transaction, each with its `device.create` /
    /// `detector.create` operation-log entry, plus one `import.devices` entry with the counts
    /// and `source` (e.g. the file name). Projects are found by exact name within the caller's
    /// tenant and project scope.
    pub async fn import_devices(
        &self,
        who: &Principal,
        source: &str,
        rows: &[ImportRow],
        progress: &dyn ImportProgress,
    ) -> Result<ImportSummary, ImportError> {
        let tenant = who.tenant()?;
        who.require(Permission::DeviceManage)?;
        if rows.is_empty() {
            return Err(ImportError::Rows(vec![RowError::row(1, "there are no data rows to import")]));
        }
        let tx = self.begin().await?;
        let plan = match check_rows(&tx, who, tenant, rows, progress).await? {
            Ok(plan) => plan,
            Err(errors) => {
                tx.rollback().await?;
                return Err(ImportError::Rows(errors));
            }
        };
        let summary = ImportSummary { devices: plan.devices.len(), detectors: plan.detectors, projects: plan.projects };

        progress.begin(ImportStage::Inserting, plan.devices.len() as u64);
        let now = self.now();
        for planned in plan.devices {
            let serial = planned.draft.serial.clone();
            // The operator imports for one tenant: another tenant's gateway stays refused.
            match self.take_gateway(&tx, tenant, &planned.draft, &[]).await {
                Ok(()) => {}
                Err(AppError::Refused { message, .. }) => {
                    return Err(ImportError::Rows(vec![RowError::cell(planned.line, "host", message)]));
                }
                Err(e) => return Err(e.into()),
            }
            let device = st::insert_device(&tx, tenant, planned.draft, now).await.map_err(|e| {
                insert_error(
                    e,
                    planned.line,
                    "serial",
                    &format!("a device with serial `{serial}` was registered while importing"),
                )
            })?;
            self.log(
                &tx,
                who,
                Entry::new(Some(tenant), "device.create", "device", Some(device.id.to_string()))
                    .after(snapshot(&device)),
            )
            .await?;
            for (line, mut draft) in planned.detectors {
                draft.device_id = device.id;
                let address = draft.address;
                let detector =
                    st::insert_detector(&tx, tenant, device.draft.project_id, draft, now).await.map_err(|e| {
                        insert_error(
                            e,
                            line,
                            "address",
                            &format!("the device already has a detector at address {address}"),
                        )
                    })?;
                self.log(
                    &tx,
                    who,
                    Entry::new(Some(tenant), "detector.create", "detector", Some(detector.id.to_string()))
                        .after(snapshot(&detector)),
                )
                .await?;
            }
            progress.advance(ImportStage::Inserting);
        }
        let counts = serde_json::json!({
            "source": source,
            "rows": rows.len(),
            "devices": summary.devices,
            "detectors": summary.detectors,
            "projects": summary.projects,
        });
        self.log(&tx, who, Entry::new(Some(tenant), "import.devices", "import", None).after(Some(counts))).await?;
        tx.commit().await?;
        self.sites_changed();
        progress.end(ImportStage::Inserting);
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows_err(result: Result<Vec<ImportRow>, ImportError>) -> Vec<RowError> {
        match result {
            Err(ImportError::Rows(r)) => r,
            other => panic!("expected row errors, got {other:?}"),
        }
    }

    #[test]
    fn header_is_checked() {
        let errors = rows_err(parse_csv(b"Project,SERIAL,Device Name,colour\nP,A,B,red\n"));
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|e| e.starts_with("row 1: unknown column `colour`")), "{text:?}");
        assert!(
            text.contains(&"row 1, column transport: is required but missing from the header".to_owned()),
            "{text:?}"
        );
        assert!(
            text.contains(&"row 1, column address: is required but missing from the header".to_owned()),
            "{text:?}"
        );
        assert!(rows_err(parse_csv(b"")).iter().any(|e| e.reason.contains("empty")));
        assert!(
            rows_err(parse_csv(b"project,serial,device_name,transport,address\n"))
                .iter()
                .any(|e| e.reason.contains("no data rows"))
        );
    }

    #[test]
    fn rows_keep_their_line_numbers() {
        let data = "\u{feff}serial,project,device_name,transport,address,detector_name\n\
                    A1, Plant ,Board,MQTT,1,\n\
                    \n\
                    A1,Plant,Board,MQTT,2,\"two\nlines\"\n\
                    ,,,,,\n\
                    A1,Plant,Board,MQTT,3,x\n";
        let rows = parse_csv(data.as_bytes()).expect("parses");
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 4, 7]);
        assert_eq!(rows[0].get("project"), Some("Plant"));
        assert_eq!(rows[0].get("detector_name"), None);
        assert_eq!(rows[1].get("detector_name"), Some("two\nlines"));

        let crlf = "\r\nserial,project,device_name,transport,address\r\nA,P,B,MQTT,1\r\n\r\n\r\nA,P,B,MQTT,2\r\n";
        let rows = parse_csv(crlf.as_bytes()).expect("parses");
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), vec![3, 6]);

        let latin1 = b"serial,project,device_name,transport,address\nA,P,B,MQTT,1\nA,\xC9cole,B,MQTT,2\n";
        let rows = parse_csv(latin1).expect("parses");
        assert_eq!(rows[0].unreadable, None);
        assert_eq!(rows[1].line, 3);
        assert!(rows[1].unreadable.as_deref().is_some_and(|r| r.contains("UTF-8")), "{rows:?}");
        let rows = parse_csv(b"serial,project,device_name,transport,address,\nA,P,B,MQTT,1,,\nA,P,B,MQTT,2,x\n")
            .expect("parses");
        assert_eq!(rows[0].unreadable, None, "trailing empty cells are fine");
        assert_eq!(rows[1].unreadable.as_deref(), Some("has a value in column 6, which has no header"));
    }

    #[test]
    fn cells_are_parsed() {
        let row = |cells: &[(&'static str, &str)]| ImportRow {
            line: 5,
            cells: cells.iter().map(|(c, v)| (*c, (*v).to_owned())).collect(),
            unreadable: None,
        };
        let mut errors = Vec::new();
        let r = row(&[("has_voltage", "Yes"), ("has_current", "0"), ("port", "502"), ("address", "x")]);
        assert_eq!(bool_cell(&r, "has_voltage", &mut errors), Ok(Some(true)));
        assert_eq!(bool_cell(&r, "has_current", &mut errors), Ok(Some(false)));
        assert_eq!(bool_cell(&r, "missing", &mut errors), Ok(None));
        assert_eq!(int_cell(&r, "port", &mut errors), Ok(Some(502)));
        assert!(errors.is_empty());
        assert_eq!(int_cell(&r, "address", &mut errors), Err(()));
        assert_eq!(errors[0].to_string(), "row 5, column address: `x` is not a whole number");
        assert_eq!(comparable(&row(&[("transport", "modbus-tcp")]), "transport"), "MODBUS_TCP");
        assert_eq!(device_column("intervalS"), "interval_s");
        assert_eq!(detector_column("tempChannels"), "temp_channels");
    }

    #[test]
    fn long_error_lists_are_capped() {
        let errors: Vec<RowError> = (2..=60).map(|l| RowError::cell(l, "serial", "is required")).collect();
        let text = ImportError::Rows(errors).to_string();
        assert!(text.starts_with("59 problems in the file; nothing was imported:"));
        assert!(text.contains("row 51, column serial"));
        assert!(!text.contains("row 52,"));
        assert!(text.ends_with("… and 9 more"));
    }
}
