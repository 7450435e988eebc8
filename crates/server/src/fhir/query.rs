//! FHIR search (3.1.1) and `Patient/$everything`.
//!
//! Matching happens on ids and blind index values only; the policy then filters the hits
//! one by one (the same decision a read makes), and only after that are totals counted,
//! pages cut and the page's resources decrypted. A hidden record changes no total, no
//! link and no entry. Unknown parameters are ignored and left out of the `self` link, as
//! the specification says (3.1.1.4), unless the client sends `Prefer: handling=strict`,
//! which turns them into a 400.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use telesafe_core::access::Action;
use telesafe_core::audit::Purpose;
use telesafe_core::devices::readings::{
    READING_CATEGORY, ReadingRef, parse_reading_id, reading_id,
};
use telesafe_core::records::fhir;
use telesafe_core::records::keys::KeyRing;
use telesafe_core::records::search::{self, Kind, parse_date_condition, query_value};
use telesafe_core::records::{
    ReadingBatch, ResourceRepository, SearchHit, StoredResource, StoredSearch, TimeWindow,
};
use telesafe_core::{PatientId, RepoError, Timestamp};

use super::{FhirError, FhirResult, Session, Target, base, fhir_response};
use crate::audit::Access;

/// Page size when `_count` is absent, and the most one page holds.
pub const DEFAULT_COUNT: u32 = 20;
pub const MAX_COUNT: u32 = 100;
/// The most matches a search may have before filtering; beyond it the client must narrow.
pub const MAX_CANDIDATES: u32 = 10_000;
/// Search complexity limits: parameters per request, values per parameter.
pub const MAX_PARAMS: usize = 30;
pub const MAX_VALUES: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    LastUpdated,
    Date,
    Id,
}

struct Parsed {
    stored: StoredSearch,
    count: u32,
    offset: u32,
    sort: Vec<(SortKey, bool)>,
    /// The parameters used, for the `self` link.
    used: Vec<(String, String)>,
    /// Parameters ignored (lenient handling), for the outcome entry.
    ignored: Vec<String>,
    /// A condition that cannot match (a malformed patient id): the result is empty.
    impossible: bool,
}

fn strict(headers: &HeaderMap) -> bool {
    headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.split(';').any(|x| x.trim() == "handling=strict"))
}

fn parse(
    resource_type: &str,
    raw: &str,
    strict: bool,
    tk: &telesafe_core::records::keys::TenantKeys,
) -> Result<Parsed, FhirError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| FhirError::bad_request("the search parameters are not valid form encoding"))?;
    if pairs.len() > MAX_PARAMS {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "too-costly",
            format!("a search may have at most {MAX_PARAMS} parameters"),
        ));
    }
    let mut p = Parsed {
        stored: StoredSearch {
            resource_type: resource_type.to_owned(),
            limit: MAX_CANDIDATES + 1,
            ..Default::default()
        },
        count: DEFAULT_COUNT,
        offset: 0,
        sort: Vec::new(),
        used: Vec::new(),
        ignored: Vec::new(),
        impossible: false,
    };
    let defs = search::params(resource_type);
    let has_patient = fhir::patient_element(resource_type).is_some_and(|e| !e.is_empty());
    for (name, value) in pairs {
        let (base_name, modifier) = match name.split_once(':') {
            Some((b, m)) => (b.to_owned(), Some(m.to_owned())),
            None => (name.clone(), None),
        };
        let values: Vec<&str> = value.split(',').filter(|v| !v.is_empty()).collect();
        if values.len() > MAX_VALUES {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                "too-costly",
                format!("{base_name} may have at most {MAX_VALUES} values"),
            ));
        }
        let bad_value = |what: &str| {
            FhirError::new(StatusCode::BAD_REQUEST, "value", format!("{base_name}: {what}"))
        };
        let unsupported_modifier = modifier.as_deref().is_some_and(|m| {
            let kind = defs.iter().find(|d| d.name == base_name).map(|d| d.kind);
            !(m == "exact" && matches!(kind, Some(Kind::Name | Kind::Text)))
        });
        if unsupported_modifier {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                "not-supported",
                format!(
                    "the modifier :{} is not supported on {base_name}",
                    modifier.unwrap_or_default()
                ),
            ));
        }
        match base_name.as_str() {
            "_count" => {
                let n: u32 = value.parse().map_err(|_| bad_value("must be a whole number"))?;
                // A server may return fewer than asked (3.1.1.5.6).
                p.count = n.min(MAX_COUNT);
                continue;
            }
            "_offset" => {
                p.offset = value.parse().map_err(|_| bad_value("must be a whole number"))?;
                continue;
            }
            "_format" => {
                if !value.contains("json") {
                    return Err(FhirError::new(
                        StatusCode::NOT_ACCEPTABLE,
                        "not-supported",
                        "this server speaks FHIR JSON only",
                    ));
                }
                continue;
            }
            "_sort" => {
                for v in &values {
                    let (desc, key) = match v.strip_prefix('-') {
                        Some(k) => (true, k),
                        None => (false, *v),
                    };
                    let key = match key {
                        "_lastUpdated" => SortKey::LastUpdated,
                        "_id" => SortKey::Id,
                        k if Some(k) == search::sort_param(resource_type) || k == "date" => {
                            SortKey::Date
                        }
                        _ => {
                            return Err(FhirError::new(
                                StatusCode::BAD_REQUEST,
                                "not-supported",
                                format!("cannot sort by {key}"),
                            ));
                        }
                    };
                    p.sort.push((key, desc));
                }
            }
            "_id" => {
                let ids = p.stored.ids.get_or_insert_with(Vec::new);
                if ids.is_empty() {
                    ids.extend(values.iter().map(|v| (*v).to_owned()));
                } else {
                    // Repeated _id: both must hold.
                    ids.retain(|i| values.contains(&i.as_str()));
                    p.impossible |= ids.is_empty();
                }
            }
            "_lastUpdated" => {
                for v in &values {
                    p.stored
                        .last_updated
                        .push(parse_date_condition(v).ok_or_else(|| bad_value("not a FHIR date"))?);
                }
            }
            "patient" | "subject" if has_patient => {
                let mut ids = Vec::new();
                for v in &values {
                    let id = v.strip_prefix("Patient/").unwrap_or(v);
                    // A reference that is not a patient of this server matches nothing.
                    if let Ok(pid) = id.parse::<PatientId>() {
                        ids.push(pid);
                    }
                }
                if ids.is_empty() {
                    p.impossible = true;
                }
                match &mut p.stored.patients {
                    Some(existing) => existing.retain(|x| ids.contains(x)),
                    None => p.stored.patients = Some(ids),
                }
            }
            other => match defs.iter().find(|d| d.name == other) {
                Some(def) if def.kind == Kind::Date => {
                    let conds = values
                        .iter()
                        .map(|v| {
                            parse_date_condition(v).ok_or_else(|| bad_value("not a FHIR date"))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    p.stored.dates.push((other.to_owned(), conds));
                }
                Some(def) => {
                    let hashes = values
                        .iter()
                        .map(|v| KeyRing::blind(tk, def.name, &query_value(def.kind, v)))
                        .collect();
                    if resource_type == "Observation" && other == "identifier" {
                        let named: Vec<ReadingRef> =
                            values.iter().filter_map(|v| batch_identifier(v)).collect();
                        if p.stored.tokens.iter().any(|(t, _)| t == "identifier") {
                            // Repeated: both must hold.
                            p.stored.identified_readings.retain(|r| named.contains(r));
                        } else {
                            p.stored.identified_readings = named;
                        }
                    }
                    p.stored.tokens.push((other.to_owned(), hashes));
                }
                None => {
                    if strict {
                        return Err(FhirError::new(
                            StatusCode::BAD_REQUEST,
                            "not-supported",
                            format!(
                                "the search parameter {other} is not supported on {resource_type}"
                            ),
                        ));
                    }
                    p.ignored.push(name.clone());
                    continue;
                }
            },
        }
        p.used.push((name, value));
    }
    if values_empty(&p) {
        p.impossible = true;
    }
    Ok(p)
}

/// The device reading an Observation identifier names: `<device>/<seq>/<n>`, with the
/// system `urn:telesafe:device-batch` or none.
fn batch_identifier(value: &str) -> Option<ReadingRef> {
    let v = match value.split_once('|') {
        Some(("urn:telesafe:device-batch" | "", v)) => v,
        Some(_) => return None,
        None => value,
    };
    let mut parts = v.split('/');
    let (device, seq, n) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let device = uuid::Uuid::try_parse(device).ok()?.hyphenated().to_string();
    // The spelling the identifier is filed under, exactly.
    let id = reading_id(&device, seq.parse().ok()?, n.parse().ok()?)?;
    let r = parse_reading_id(&id)?;
    (format!("{}/{}/{}", r.device, r.seq, r.n) == v).then_some(r)
}

fn values_empty(p: &Parsed) -> bool {
    p.stored.ids.as_ref().is_some_and(Vec::is_empty)
        || p.stored.patients.as_ref().is_some_and(Vec::is_empty)
}

/// Filters hits by the policy (one decision per distinct patient/category/label).
async fn visible(
    s: &mut Session,
    resource_type: &str,
    hits: Vec<SearchHit>,
) -> Result<Vec<(SearchHit, Purpose)>, FhirError> {
    let mut cache: HashMap<(Option<PatientId>, String, bool), Option<Purpose>> = HashMap::new();
    let mut out = Vec::new();
    for h in hits {
        let key = (h.patient, h.category.clone(), h.restricted);
        let decision = match cache.get(&key) {
            Some(d) => *d,
            None => {
                let row = StoredResource {
                    tenant: s.tenant,
                    resource_type: resource_type.to_owned(),
                    id: h.id.clone(),
                    version: h.version,
                    patient: h.patient,
                    last_updated: h.last_updated,
                    deleted: false,
                    category: h.category.clone(),
                    restricted: h.restricted,
                    body: Vec::new(),
                };
                let d = s.decide(Action::Search, &Target::of(&row)?).await?;
                cache.insert(key, d);
                d
            }
        };
        if let Some(purpose) = decision {
            out.push((h, purpose));
        }
    }
    Ok(out)
}

fn sort_hits(hits: &mut [(SearchHit, Purpose)], sort: &[(SortKey, bool)]) {
    let order: Vec<(SortKey, bool)> =
        if sort.is_empty() { vec![(SortKey::LastUpdated, true)] } else { sort.to_vec() };
    hits.sort_by(|(a, _), (b, _)| {
        for (key, desc) in &order {
            let o = match key {
                SortKey::LastUpdated => a.last_updated.cmp(&b.last_updated),
                SortKey::Date => a.sort_date.cmp(&b.sort_date),
                SortKey::Id => a.id.cmp(&b.id),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != std::cmp::Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id)
    });
}

fn link(
    base: &str,
    resource_type: &str,
    used: &[(String, String)],
    count: u32,
    offset: u32,
) -> String {
    let mut pairs: Vec<(String, String)> = used.to_vec();
    pairs.push(("_count".into(), count.to_string()));
    pairs.push(("_offset".into(), offset.to_string()));
    let q = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    format!("{base}/{resource_type}?{q}")
}

pub(super) async fn search(
    s: &mut Session,
    resource_type: &str,
    raw: &str,
    headers: &HeaderMap,
) -> FhirResult {
    let now = s.now();
    let tk =
        s.state.keys.tenant(&s.state.store, s.tenant, now).await.map_err(FhirError::internal)?;
    let p = parse(resource_type, raw, strict(headers), &tk)?;
    let hits =
        if p.impossible { Vec::new() } else { s.state.store.search(s.tenant, &p.stored).await? };
    if hits.len() > MAX_CANDIDATES as usize {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "too-costly",
            format!(
                "the search matches more than {MAX_CANDIDATES} resources; add parameters to narrow it"
            ),
        ));
    }
    let mut hits = visible(s, resource_type, hits).await?;
    sort_hits(&mut hits, &p.sort);
    let total = hits.len();
    let start = (p.offset as usize).min(total);
    let end = (start + p.count as usize).min(total);
    let page = &hits[start..end];

    // Fail closed: the search and every resource it shows are on the log first.
    let single_patient = p.stored.patients.as_ref().filter(|v| v.len() == 1).map(|v| v[0]);
    let mut accesses = vec![Access {
        action: "search",
        resource_type,
        resource_id: String::new(),
        patient_id: single_patient.map(|p| p.to_string()).unwrap_or_default(),
        purpose: s.purpose(),
        outcome: "success",
    }];
    accesses.extend(page.iter().map(|(h, purpose)| Access {
        action: "list",
        resource_type,
        resource_id: h.id.clone(),
        patient_id: h.patient.map(|p| p.to_string()).unwrap_or_default(),
        purpose: *purpose,
        outcome: "success",
    }));
    s.audit(&accesses).await?;

    let ids: Vec<String> = page.iter().map(|(h, _)| h.id.clone()).collect();
    let rows = s.state.store.current_many(s.tenant, resource_type, &ids).await?;
    let mut by_id: HashMap<String, StoredResource> =
        rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    let base = base(&s.state);
    let mut entries = Vec::with_capacity(page.len());
    for id in &ids {
        // A resource changed or deleted since the match is left out rather than shown stale.
        let Some(row) = by_id.remove(id) else { continue };
        entries.push(json!({
            "fullUrl": format!("{base}/{resource_type}/{id}"),
            "resource": s.decrypt(&row).await?,
            "search": {"mode": "match"},
        }));
    }
    if !p.ignored.is_empty() {
        entries.push(json!({
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "warning",
                    "code": "not-supported",
                    "diagnostics": format!("ignored unsupported search parameters: {}", p.ignored.join(", ")),
                }]
            },
            "search": {"mode": "outcome"},
        }));
    }
    let count = p.count.max(1);
    let mut links = vec![
        json!({"relation": "self", "url": link(&base, resource_type, &p.used, p.count, p.offset)}),
        json!({"relation": "first", "url": link(&base, resource_type, &p.used, count, 0)}),
    ];
    if end < total {
        links.push(json!({"relation": "next", "url": link(&base, resource_type, &p.used, count, end as u32)}));
    }
    if start > 0 {
        let prev = start.saturating_sub(count as usize) as u32;
        links.push(json!({"relation": "previous", "url": link(&base, resource_type, &p.used, count, prev)}));
    }
    let last = if total == 0 { 0 } else { ((total - 1) / count as usize) * count as usize };
    links.push(
        json!({"relation": "last", "url": link(&base, resource_type, &p.used, count, last as u32)}),
    );
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": entries,
    });
    let mut bundle = bundle;
    if bundle["entry"].as_array().is_some_and(Vec::is_empty) {
        // FHIR JSON has no empty arrays.
        if let Some(m) = bundle.as_object_mut() {
            m.remove("entry");
        }
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}

/// The most ordinary resources (all but device readings) `$everything` returns: its first
/// page holds them all. Device readings come in pages of at most this many.
pub const MAX_EVERYTHING: usize = 5_000;

/// What a record view is for, which decides how many device readings it may hold and
/// how they are put on the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordFor {
    /// A page of a bundle (`$everything`): everything in it leaves the server, so each
    /// reading gets its own `read` entry. The first page (no `after`) holds the Patient
    /// and the rest of the record (refused before anything is logged or opened if that is
    /// more than [`MAX_EVERYTHING`] resources), then the newest `count` readings; each
    /// page after holds the `count` readings after the reading `after` that ended the
    /// page before.
    Bundle { count: u32, after: Option<ReadingRef> },
    /// A chart: the newest `limit` readings in the window are drawn, not handed over,
    /// and logged as one `chart` entry naming the window. A monitored patient has
    /// thousands a day; one entry each would bury everything else in the log (and in the
    /// patient's own view of who saw their record).
    Chart { limit: u32 },
}

/// A patient's record as the caller may see it: decided resource by resource (device
/// readings once, as they share one category), logged, then decrypted, but for the
/// device readings, which stay sealed batches for the caller to open one at a time (a
/// month of minute readings is too much to hold as JSON at once).
#[derive(Debug)]
pub(crate) struct RecordView {
    /// The Patient first, then the rest by type and id; no device readings.
    pub resources: Vec<serde_json::Value>,
    /// The device readings measured in the window the caller asked for, newest first.
    pub readings: Vec<ReadingBatch>,
    /// When more readings lie in the window than the caller's limit (the oldest were left
    /// out), the last reading given: where the next page of a bundle starts after.
    pub next: Option<ReadingRef>,
    /// Whether anything was shown only under a break-glass grant.
    pub emergency: bool,
}

/// The ISO 8601 interval a window spans (`..` for an open side), as the audit log names it.
fn interval(w: TimeWindow) -> String {
    let side = |t: Option<i64>| {
        t.map_or_else(|| "..".to_owned(), |ms| Timestamp::from_unix_millis(ms).to_rfc3339())
    };
    format!("{}/{}", side(w.from), side(w.to))
}

pub(crate) async fn patient_record(
    s: &mut Session,
    id: &str,
    window: TimeWindow,
    purpose_of_view: RecordFor,
) -> Result<RecordView, FhirError> {
    let (row, purpose) = super::readable(s, "Patient", id, None, "everything").await?;
    if row.deleted {
        s.audit_one("everything", "Patient", id, row.patient, purpose, "success").await?;
        return Err(FhirError::new(StatusCode::GONE, "deleted", "this patient was deleted"));
    }
    let Some(patient) = row.patient else {
        return Err(FhirError::internal("a Patient row without its patient"));
    };
    // Pages after the first hold device readings only.
    let rows = match &purpose_of_view {
        RecordFor::Bundle { after: Some(_), .. } => Vec::new(),
        _ => s.state.store.compartment(s.tenant, patient).await?,
    };
    if rows.len() > MAX_EVERYTHING {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "too-costly",
            format!(
                "this record holds more than {MAX_EVERYTHING} resources besides device \
                 readings; search it by type instead"
            ),
        ));
    }
    let (limit, after) = match &purpose_of_view {
        RecordFor::Bundle { count, after } => (*count, after.as_ref()),
        RecordFor::Chart { limit } => (*limit, None),
    };
    let mut shown: Vec<(StoredResource, Purpose)> = Vec::new();
    let mut cache: HashMap<(String, String, bool), Option<Purpose>> = HashMap::new();
    for r in rows {
        let key = (r.resource_type.clone(), r.category.clone(), r.restricted);
        let d = match cache.get(&key) {
            Some(d) => *d,
            None => {
                let d = s.decide(Action::Read, &Target::of(&r)?).await?;
                cache.insert(key, d);
                d
            }
        };
        if let Some(p) = d {
            shown.push((r, p));
        }
    }
    shown.sort_by_key(|(r, _)| {
        (r.resource_type != "Patient", r.resource_type.clone(), r.id.clone())
    });
    // Every device reading is an Observation of one category, never labelled restricted:
    // one decision covers them all, made before they are looked for, so that a caller who
    // may not see them learns nothing of them (not even that there are too many).
    let readings_target = Target::Record {
        id: CHART_ENTRY.to_owned(),
        resource_type: "Observation".to_owned(),
        patient,
        category: READING_CATEGORY.to_owned(),
        restricted: false,
    };
    let readings_purpose = s.decide(Action::Read, &readings_target).await?;
    let (readings, next) = match readings_purpose {
        Some(_) => {
            match s.state.store.patient_readings(s.tenant, patient, window, limit, after).await {
                Ok(found) => found,
                Err(RepoError::NotFound) => return Err(bad_cursor()),
                Err(e) => return Err(e.into()),
            }
        }
        // Whoever may not see readings is not told that a page position names none.
        None => (Vec::new(), None),
    };
    let mut accesses = vec![Access {
        action: "everything",
        resource_type: "Patient",
        resource_id: id.to_owned(),
        patient_id: patient.to_string(),
        purpose,
        outcome: "success",
    }];
    accesses.extend(shown.iter().map(|(r, p)| Access {
        action: "read",
        resource_type: r.resource_type.as_str(),
        resource_id: r.id.clone(),
        patient_id: patient.to_string(),
        purpose: *p,
        outcome: "success",
    }));
    if let Some(p) = readings_purpose.filter(|_| !readings.is_empty()) {
        match purpose_of_view {
            RecordFor::Bundle { .. } => {
                for b in &readings {
                    let Some(batch) = parse_reading_id(&b.batch.id) else { continue };
                    accesses.extend(b.readings.iter().filter_map(|&n| {
                        Some(Access {
                            action: "read",
                            resource_type: "Observation",
                            resource_id: reading_id(&batch.device, batch.seq, n)?,
                            patient_id: patient.to_string(),
                            purpose: p,
                            outcome: "success",
                        })
                    }));
                }
            }
            RecordFor::Chart { .. } => accesses.push(Access {
                action: "chart",
                resource_type: CHART_ENTRY,
                resource_id: interval(window),
                patient_id: patient.to_string(),
                purpose: p,
                outcome: "success",
            }),
        }
    }
    s.audit(&accesses).await?;
    let mut resources = Vec::with_capacity(shown.len());
    for (r, _) in &shown {
        resources.push(s.decrypt(r).await?);
    }
    let emergency = purpose == Purpose::Emergency
        || shown.iter().any(|(_, p)| *p == Purpose::Emergency)
        || readings_purpose == Some(Purpose::Emergency);
    Ok(RecordView { resources, readings, next, emergency })
}

/// What a `chart` audit entry names: device readings drawn over a window of time.
pub const CHART_ENTRY: &str = "device-readings";

/// A `$everything` request: `start` and `end` (dates, inclusive) as a window of
/// measurement times, which bounds the device readings (the rest of the record is always
/// included); `_count`, the most readings a page holds; and `_cursor`, the reading that
/// ended the page before (set by the server in `next` links).
#[derive(Debug)]
struct EverythingQuery {
    window: TimeWindow,
    count: u32,
    after: Option<ReadingRef>,
    /// `start`, `end` and `_count` as given, for the bundle's links.
    used: Vec<(String, String)>,
}

/// An unusable `_cursor`. The same whether it is malformed or names no reading of this
/// record, so it tells nothing of other records.
fn bad_cursor() -> FhirError {
    FhirError::new(
        StatusCode::BAD_REQUEST,
        "invalid",
        "_cursor names no reading of this record; follow the bundle's next link as given",
    )
}

fn everything_query(raw: &str) -> Result<EverythingQuery, FhirError> {
    let mut q = EverythingQuery {
        window: TimeWindow::default(),
        count: MAX_EVERYTHING as u32,
        after: None,
        used: Vec::new(),
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|_| {
        FhirError::new(StatusCode::BAD_REQUEST, "invalid", "the query string is malformed")
    })?;
    for (k, v) in pairs {
        let side = match k.as_str() {
            "start" => &mut q.window.from,
            "end" => &mut q.window.to,
            "_count" => {
                match v.parse::<u32>() {
                    // A server may return fewer than asked (3.1.1.5.6).
                    Ok(n) if n > 0 => q.count = n.min(MAX_EVERYTHING as u32),
                    _ => {
                        return Err(FhirError::bad_request(
                            "_count must be a whole number above 0",
                        ));
                    }
                }
                q.used.push((k, v));
                continue;
            }
            "_cursor" => {
                q.after = Some(parse_reading_id(&v).ok_or_else(bad_cursor)?);
                continue;
            }
            _ => continue,
        };
        let Some(r) = search::parse_date_range(&v) else {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("{k} must be a date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime)"),
            ));
        };
        *side = Some(if k == "start" { r.low } else { r.high.saturating_add(1) });
        q.used.push((k, v));
    }
    if let (Some(f), Some(t)) = (q.window.from, q.window.to)
        && f >= t
    {
        return Err(FhirError::new(StatusCode::BAD_REQUEST, "invalid", "start is after end"));
    }
    Ok(q)
}

/// `Patient/$everything`, in pages when the patient's device readings do not fit in one:
/// a `next` link carries on after the last reading given (keyset paging: however many
/// readings are filed meanwhile, none comes twice).
pub(super) async fn everything(s: &mut Session, id: &str, raw: &str) -> FhirResult {
    let q = everything_query(raw)?;
    let paged = q.after.is_some();
    let page = RecordFor::Bundle { count: q.count, after: q.after.clone() };
    let view = patient_record(s, id, q.window, page).await?;
    let base = base(&s.state);
    let mut resources = view.resources;
    for b in &view.readings {
        // Newest first within a batch too (its readings are kept in measuring order).
        resources.extend(s.decrypt_readings(b).await?.into_iter().rev());
    }
    let entries: Vec<serde_json::Value> = resources
        .into_iter()
        .map(|r| {
            let url = format!(
                "{base}/{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            json!({"fullUrl": url, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    let link = |cursor: Option<&ReadingRef>| {
        let mut pairs = q.used.clone();
        if let Some(c) = cursor.and_then(|c| reading_id(&c.device, c.seq, c.n)) {
            pairs.push(("_cursor".into(), c));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        let sep = if query.is_empty() { "" } else { "?" };
        format!("{base}/Patient/{id}/$everything{sep}{query}")
    };
    let mut links = vec![json!({"relation": "self", "url": link(q.after.as_ref())})];
    if let Some(next) = &view.next {
        links.push(json!({"relation": "next", "url": link(Some(next))}));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    // The total is known only when the whole record came in this one page.
    if !paged
        && view.next.is_none()
        && let Some(m) = bundle.as_object_mut()
    {
        let n = m["entry"].as_array().map_or(0, Vec::len);
        m.insert("total".into(), json!(n));
    }
    if bundle["entry"].as_array().is_some_and(Vec::is_empty)
        && let Some(m) = bundle.as_object_mut()
    {
        m.remove("entry");
    }
    Ok(fhir_response(StatusCode::OK, &bundle))
}
