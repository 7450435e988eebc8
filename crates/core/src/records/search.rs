//! FHIR search parameters: which ones each resource type supports, how their values are
//! taken out of a resource for the (blind) index, and how dates are compared.
//!
//! Token and string values are normalised and then blinded with the tenant's index key
//! (exact match only: a blind index cannot do prefixes). Dates are kept as ranges of Unix
//! milliseconds so that `ge`, `lt`, ... work in SQL.

use serde_json::Value;

use super::IndexEntry;
use super::normalise;

/// How a parameter's values are read and matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Codes, codings, identifiers, booleans: `[system|]code`.
    Token,
    /// Human names: every part and every word, case- and accent-insensitive.
    Name,
    /// Plain strings (an organisation's name): whole value or any word.
    Text,
    /// `telecom` entries of one system (`email`, `phone`).
    Telecom(&'static str),
    Date,
    /// A reference to another resource (`Type/id`).
    Reference,
}

/// One search parameter of a resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: Kind,
    /// Element paths (dotted; `x[x]` matches a choice element).
    pub paths: &'static [&'static str],
    /// What the CapabilityStatement says about it.
    pub doc: &'static str,
}

const fn p(
    name: &'static str,
    kind: Kind,
    paths: &'static [&'static str],
    doc: &'static str,
) -> ParamDef {
    ParamDef { name, kind, paths, doc }
}

const NAME_DOC: &str = "Matches a whole name part or one word of it, ignoring case and accents (no prefix match: values are kept only as keyed hashes)";
const TOKEN_DOC: &str = "[system]|[code], code, |code or system|";
const DATE_DOC: &str = "Prefixes eq, ne, lt, gt, le, ge, sa, eb; dates without a time zone are UTC";

/// The parameters each type supports beyond `_id`, `_lastUpdated`, `_count`, `_sort` and
/// (for types in a patient's compartment) `patient` / `subject`.
pub fn params(resource_type: &str) -> &'static [ParamDef] {
    use Kind::*;
    match resource_type {
        "Patient" => {
            const {
                &[
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                    p("name", Name, &["name"], NAME_DOC),
                    p("family", Name, &["name.family"], NAME_DOC),
                    p("given", Name, &["name.given"], NAME_DOC),
                    p("birthdate", Date, &["birthDate"], DATE_DOC),
                    p("gender", Token, &["gender"], TOKEN_DOC),
                    p("email", Telecom("email"), &["telecom"], "Exact address, ignoring case"),
                    p(
                        "phone",
                        Telecom("phone"),
                        &["telecom"],
                        "Digits only; spacing and punctuation ignored",
                    ),
                    p("active", Token, &["active"], TOKEN_DOC),
                ]
            }
        }
        "Practitioner" => {
            const {
                &[
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                    p("name", Name, &["name"], NAME_DOC),
                    p("family", Name, &["name.family"], NAME_DOC),
                    p("given", Name, &["name.given"], NAME_DOC),
                    p("email", Telecom("email"), &["telecom"], "Exact address, ignoring case"),
                    p("active", Token, &["active"], TOKEN_DOC),
                ]
            }
        }
        "PractitionerRole" => {
            const {
                &[
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                    p("practitioner", Reference, &["practitioner"], "Practitioner/id"),
                    p("organization", Reference, &["organization"], "Organization/id"),
                    p("role", Token, &["code"], TOKEN_DOC),
                    p("specialty", Token, &["specialty"], TOKEN_DOC),
                ]
            }
        }
        "Organization" => {
            const {
                &[
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                    p("name", Text, &["name", "alias"], NAME_DOC),
                    p("active", Token, &["active"], TOKEN_DOC),
                    p("type", Token, &["type"], TOKEN_DOC),
                ]
            }
        }
        "Observation" => {
            const {
                &[
                    p("code", Token, &["code", "component.code"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("date", Date, &["effective[x]"], DATE_DOC),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "Condition" => {
            const {
                &[
                    p("code", Token, &["code"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("clinical-status", Token, &["clinicalStatus"], TOKEN_DOC),
                    p("onset-date", Date, &["onset[x]"], DATE_DOC),
                    p("recorded-date", Date, &["recordedDate"], DATE_DOC),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "AllergyIntolerance" => {
            const {
                &[
                    p("code", Token, &["code"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("clinical-status", Token, &["clinicalStatus"], TOKEN_DOC),
                    p("criticality", Token, &["criticality"], TOKEN_DOC),
                    p("date", Date, &["recordedDate"], DATE_DOC),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "MedicationRequest" => {
            const {
                &[
                    p("code", Token, &["medication[x]"], TOKEN_DOC),
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("intent", Token, &["intent"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("authoredon", Date, &["authoredOn"], DATE_DOC),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "Encounter" => {
            const {
                &[
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("class", Token, &["class"], TOKEN_DOC),
                    p("type", Token, &["type"], TOKEN_DOC),
                    p("date", Date, &["period"], DATE_DOC),
                    p("participant", Reference, &["participant.individual"], "Practitioner/id"),
                    p("appointment", Reference, &["appointment"], "Appointment/id"),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "Appointment" => {
            const {
                &[
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("date", Date, &["start"], DATE_DOC),
                    p(
                        "actor",
                        Reference,
                        &["participant.actor"],
                        "Patient/id, Practitioner/id, ...",
                    ),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "Communication" => {
            const {
                &[
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("sent", Date, &["sent"], DATE_DOC),
                    p("encounter", Reference, &["encounter"], "Encounter/id"),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "Consent" => {
            const {
                &[
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("date", Date, &["dateTime"], DATE_DOC),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "Device" => {
            const {
                &[
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("type", Token, &["type"], TOKEN_DOC),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "DocumentReference" => {
            const {
                &[
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("type", Token, &["type"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("date", Date, &["date"], DATE_DOC),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        "CareTeam" => {
            const {
                &[
                    p("status", Token, &["status"], TOKEN_DOC),
                    p("category", Token, &["category"], TOKEN_DOC),
                    p("date", Date, &["period"], DATE_DOC),
                    p("participant", Reference, &["participant.member"], "Practitioner/id"),
                    p("identifier", Token, &["identifier"], TOKEN_DOC),
                ]
            }
        }
        _ => &[],
    }
}

/// The parameter `_sort=date` uses for this type, if any.
pub fn sort_param(resource_type: &str) -> Option<&'static str> {
    params(resource_type).iter().find(|d| d.kind == Kind::Date).map(|d| d.name)
}

/// Values at a dotted path; arrays are flattened, `x[x]` matches any `xType` key.
pub fn values_at<'a>(resource: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![resource];
    for step in path.split('.') {
        let mut next = Vec::new();
        for v in current {
            let Value::Object(m) = v else { continue };
            if let Some(prefix) = step.strip_suffix("[x]") {
                for (k, val) in m {
                    if k.len() > prefix.len()
                        && k.starts_with(prefix)
                        && k[prefix.len()..].starts_with(|c: char| c.is_ascii_uppercase())
                    {
                        push_flat(&mut next, val);
                    }
                }
            } else if let Some(val) = m.get(step) {
                push_flat(&mut next, val);
            }
        }
        current = next;
    }
    current
}

fn push_flat<'a>(out: &mut Vec<&'a Value>, v: &'a Value) {
    match v {
        Value::Array(items) => out.extend(items.iter()),
        other => out.push(other),
    }
}

/// The token forms a value is indexed under: `c:code`, `s:system|code`, `n:code` (no
/// system) and `y:system`.
pub fn token_forms(system: Option<&str>, code: &str) -> Vec<String> {
    let mut out = vec![format!("c:{code}")];
    match system {
        Some(s) => {
            out.push(format!("s:{s}|{code}"));
            out.push(format!("y:{s}"));
        }
        None => out.push(format!("n:{code}")),
    }
    out
}

/// The index form(s) a search token stands for: `code`, `system|code`, `|code`, `system|`.
pub fn token_query(raw: &str) -> String {
    match raw.split_once('|') {
        None => format!("c:{raw}"),
        Some(("", code)) => format!("n:{code}"),
        Some((system, "")) => format!("y:{system}"),
        Some((system, code)) => format!("s:{system}|{code}"),
    }
}

fn tokens_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(code) => out.extend(token_forms(None, code)),
        Value::Bool(b) => out.extend(token_forms(None, if *b { "true" } else { "false" })),
        Value::Object(m) => {
            if let Some(Value::Array(codings)) = m.get("coding") {
                for c in codings {
                    tokens_of(c, out);
                }
            } else if let Some(Value::String(code)) = m.get("code") {
                out.extend(token_forms(m.get("system").and_then(Value::as_str), code));
            } else if let Some(Value::String(value)) = m.get("value") {
                // An Identifier.
                out.extend(token_forms(m.get("system").and_then(Value::as_str), value));
            }
        }
        _ => {}
    }
}

fn names_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let whole = normalise::text(s);
            if !whole.is_empty() {
                out.push(whole);
            }
            out.extend(normalise::words(s));
        }
        Value::Object(m) => {
            for key in ["family", "given", "text", "prefix", "suffix"] {
                for part in m.get(key).map(flat).unwrap_or_default() {
                    names_of(part, out);
                }
            }
        }
        _ => {}
    }
}

fn flat(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    push_flat(&mut out, v);
    out
}

/// The index entries of `resource` (current version), values blinded with `blind(param,
/// normalised)`. Also returns the resource's main date for sorting.
pub fn index_entries(
    resource_type: &str,
    resource: &Value,
    blind: impl Fn(&str, &str) -> String,
) -> (Vec<IndexEntry>, Option<i64>) {
    let mut out = Vec::new();
    let mut sort_date = None;
    let sort = sort_param(resource_type);
    for def in params(resource_type) {
        let mut values: Vec<String> = Vec::new();
        for path in def.paths {
            for v in values_at(resource, path) {
                match def.kind {
                    Kind::Token => tokens_of(v, &mut values),
                    Kind::Name | Kind::Text => names_of(v, &mut values),
                    Kind::Telecom(system) => {
                        if v.get("system").and_then(Value::as_str) == Some(system)
                            && let Some(value) = v.get("value").and_then(Value::as_str)
                        {
                            values.push(if system == "phone" {
                                normalise::phone(value)
                            } else {
                                normalise::email(value)
                            });
                        }
                    }
                    Kind::Reference => {
                        if let Some(r) = v.get("reference").and_then(Value::as_str) {
                            values.push(r.to_owned());
                        }
                    }
                    Kind::Date => {
                        if let Some(r) = date_value_range(v) {
                            if sort == Some(def.name) && sort_date.is_none() {
                                sort_date = Some(r.low);
                            }
                            out.push(IndexEntry::Date {
                                param: def.name.to_owned(),
                                low: r.low,
                                high: r.high,
                            });
                        }
                    }
                }
            }
        }
        values.sort();
        values.dedup();
        out.extend(
            values.into_iter().map(|v| IndexEntry::Token {
                param: def.name.to_owned(),
                hash: blind(def.name, &v),
            }),
        );
    }
    (out, sort_date)
}

/// The normalised form a search value is blinded in, for a parameter of `kind`.
pub fn query_value(kind: Kind, raw: &str) -> String {
    match kind {
        Kind::Token => token_query(raw),
        Kind::Name | Kind::Text => normalise::text(raw),
        Kind::Telecom("phone") => normalise::phone(raw),
        Kind::Telecom(_) => normalise::email(raw),
        Kind::Reference | Kind::Date => raw.to_owned(),
    }
}

/// An inclusive range of Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    pub low: i64,
    pub high: i64,
}

fn date_value_range(v: &Value) -> Option<DateRange> {
    match v {
        Value::String(s) => parse_date_range(s),
        Value::Object(m) => {
            let start = m.get("start").and_then(Value::as_str).and_then(parse_date_range);
            let end = m.get("end").and_then(Value::as_str).and_then(parse_date_range);
            match (start, end) {
                (None, None) => None,
                (s, e) => Some(DateRange {
                    low: s.map_or(i64::MIN, |s| s.low),
                    high: e.map_or(i64::MAX, |e| e.high),
                }),
            }
        }
        _ => None,
    }
}

/// The range a FHIR date, dateTime or instant covers at its precision: `2024` is the whole
/// year, `2024-05-01T10:00:00+02:00` one second. Dates without a zone are taken as UTC.
pub fn parse_date_range(s: &str) -> Option<DateRange> {
    use time::{Date, Month, PrimitiveDateTime, Time};
    let num = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<u32>().ok());
    let ms = |d: time::OffsetDateTime| (d.unix_timestamp_nanos() / 1_000_000) as i64;
    let day_start = |y: i32, m: u8, d: u8| {
        let date = Date::from_calendar_date(y, Month::try_from(m).ok()?, d).ok()?;
        Some(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc())
    };
    let year = i32::try_from(num(0, 4)?).ok()?;
    match s.len() {
        4 => {
            let a = day_start(year, 1, 1)?;
            let b = day_start(year + 1, 1, 1)?;
            Some(DateRange { low: ms(a), high: ms(b) - 1 })
        }
        7 if s.as_bytes()[4] == b'-' => {
            let m = u8::try_from(num(5, 7)?).ok()?;
            let a = day_start(year, m, 1)?;
            let b = if m == 12 { day_start(year + 1, 1, 1)? } else { day_start(year, m + 1, 1)? };
            Some(DateRange { low: ms(a), high: ms(b) - 1 })
        }
        10 if s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' => {
            let a =
                day_start(year, u8::try_from(num(5, 7)?).ok()?, u8::try_from(num(8, 10)?).ok()?)?;
            Some(DateRange { low: ms(a), high: ms(a) + 86_400_000 - 1 })
        }
        _ => {
            // With a time, FHIR requires seconds and a zone: exactly RFC 3339.
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()?;
            let low = ms(t);
            // Precision: whole seconds unless fractions were given.
            let high = if s.contains('.') { low } else { low - low.rem_euclid(1000) + 999 };
            Some(DateRange { low, high })
        }
    }
}

/// A date comparison prefix (FHIR R4 search, 3.1.1.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Sa,
    Eb,
}

/// `prefix` applied to a search value's range; the store turns it into SQL over the
/// target's [low, high].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateCondition {
    pub prefix: Prefix,
    pub range: DateRange,
}

impl DateCondition {
    /// Whether a target range matches, as the store's SQL must decide it too.
    pub fn matches(&self, t: DateRange) -> bool {
        let s = self.range;
        let eq = s.low <= t.low && t.high <= s.high;
        match self.prefix {
            Prefix::Eq => eq,
            Prefix::Ne => !eq,
            Prefix::Gt => t.high > s.high,
            Prefix::Lt => t.low < s.low,
            Prefix::Ge => t.high > s.high || eq,
            Prefix::Le => t.low < s.low || eq,
            Prefix::Sa => t.low > s.high,
            Prefix::Eb => t.high < s.low,
        }
    }
}

/// Parses `ge2024-01-01`, `2024`, `lt2024-05-01T10:00:00Z`, ...
pub fn parse_date_condition(raw: &str) -> Option<DateCondition> {
    let (prefix, rest) = match raw.get(..2) {
        Some("eq") => (Prefix::Eq, &raw[2..]),
        Some("ne") => (Prefix::Ne, &raw[2..]),
        Some("lt") => (Prefix::Lt, &raw[2..]),
        Some("gt") => (Prefix::Gt, &raw[2..]),
        Some("le") => (Prefix::Le, &raw[2..]),
        Some("ge") => (Prefix::Ge, &raw[2..]),
        Some("sa") => (Prefix::Sa, &raw[2..]),
        Some("eb") => (Prefix::Eb, &raw[2..]),
        _ => (Prefix::Eq, raw),
    };
    Some(DateCondition { prefix, range: parse_date_range(rest)? })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn date_ranges_follow_precision() {
        let y = parse_date_range("2024").unwrap();
        let d = parse_date_range("2024-02-29").unwrap();
        let t = parse_date_range("2024-02-29T10:00:00+01:00").unwrap();
        assert!(y.low <= d.low && d.high <= y.high);
        assert_eq!(d.high - d.low, 86_400_000 - 1);
        assert_eq!(t.low, d.low + 9 * 3_600_000);
        assert_eq!(t.high - t.low, 999);
        assert!(parse_date_range("2023-02-29").is_none());
        assert!(parse_date_range("2024-13").is_none());
        assert!(parse_date_range("yesterday").is_none());
    }

    #[test]
    fn prefixes_compare_ranges_as_the_spec_says() {
        let day = |s| parse_date_range(s).unwrap();
        let c = |s| parse_date_condition(s).unwrap();
        assert!(c("2024-05").matches(day("2024-05-10")));
        assert!(!c("2024-05").matches(day("2024-06-01")));
        assert!(c("ge2024-05-10").matches(day("2024-05-10")));
        assert!(c("ge2024-05-10").matches(day("2024-05-11")));
        assert!(!c("ge2024-05-10").matches(day("2024-05-09")));
        assert!(c("lt2024-05-10").matches(day("2024-05-09")));
        assert!(!c("lt2024-05-10").matches(day("2024-05-10")));
        assert!(c("ne2024-05-10").matches(day("2024-05-11")));
        assert!(c("sa2024-05-10").matches(day("2024-05-11")));
        assert!(c("eb2024-05-10").matches(day("2024-05-09")));
        assert!(parse_date_condition("xx2024").is_none());
    }

    #[test]
    fn index_values_cover_names_tokens_and_telecoms() {
        let patient = json!({
            "resourceType": "Patient",
            "name": [{"family": "López-García", "given": ["Ana", "María"]}],
            "identifier": [{"system": "urn:mrn", "value": "MRN-1"}],
            "telecom": [{"system": "phone", "value": "+1 (555) 010-0199"}, {"system": "email", "value": "Ana@Example.test"}],
            "birthDate": "1950-03-02",
            "gender": "female"
        });
        let (entries, _) = index_entries("Patient", &patient, |p, v| format!("{p}={v}"));
        let has = |s: &str| {
            entries.iter().any(|e| matches!(e, IndexEntry::Token { hash, .. } if hash == s))
        };
        assert!(has("family=lopez-garcia") && has("family=lopez") && has("family=garcia"));
        assert!(has("given=maria") && has("name=ana"));
        assert!(has("identifier=s:urn:mrn|MRN-1") && has("identifier=c:MRN-1"));
        assert!(has("phone=15550100199") && has("email=ana@example.test"));
        assert!(has("gender=c:female"));
        assert!(
            entries
                .iter()
                .any(|e| matches!(e, IndexEntry::Date { param, .. } if param == "birthdate"))
        );
    }

    #[test]
    fn choice_paths_and_sort_dates() {
        let obs = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "effectiveDateTime": "2024-05-01T10:00:00Z"
        });
        let (entries, sort) = index_entries("Observation", &obs, |p, v| format!("{p}={v}"));
        assert_eq!(sort, parse_date_range("2024-05-01T10:00:00Z").map(|r| r.low));
        assert!(entries.iter().any(|e| matches!(e, IndexEntry::Token { hash, .. } if hash == "code=s:http://loinc.org|8867-4")));
        assert_eq!(token_query("http://loinc.org|8867-4"), "s:http://loinc.org|8867-4");
        assert_eq!(token_query("|x"), "n:x");
        assert_eq!(token_query("sys|"), "y:sys");
    }
}
