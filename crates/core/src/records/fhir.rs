//! The FHIR R4 resources Telesafe stores, and structural validation of incoming JSON
//! against their definitions (`fhir_defs.txt`): every element known, types and
//! cardinality right, primitives in their lexical form, required codes from their value
//! sets. Errors carry the FHIRPath of the offending element.
//!
//! Hand-written because no maintained Rust FHIR crate fits (see DESIGN.md, stack notes);
//! the definitions are a transcription of the R4 resource pages, and the tests check what
//! this accepts against an independent R4 model (`fhir.resources` in Python).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

/// Every resource type the API serves, in CapabilityStatement order.
pub const RESOURCE_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "CareTeam",
    "Encounter",
    "Observation",
    "Condition",
    "AllergyIntolerance",
    "MedicationRequest",
    "Appointment",
    "Communication",
    "Consent",
    "Device",
    "DocumentReference",
];

/// Where a resource type names its patient: `None` for directory resources that belong to
/// no patient, `Some("")` for Patient itself.
pub fn patient_element(resource_type: &str) -> Option<&'static str> {
    match resource_type {
        "Patient" => Some(""),
        "Observation" | "Condition" | "MedicationRequest" | "Encounter" | "Communication"
        | "DocumentReference" | "CareTeam" => Some("subject"),
        "AllergyIntolerance" | "Consent" | "Device" => Some("patient"),
        "Appointment" => Some("participant.actor"),
        _ => None,
    }
}

/// The policy category of a resource (what front desk, consent and break-glass rules see).
pub fn policy_category(resource_type: &str, resource: &Value) -> &'static str {
    match resource_type {
        "Patient" => "demographics",
        "Appointment" => "scheduling",
        "Communication" => "messaging",
        "Consent" => "consent",
        "Device" => "devices",
        "Practitioner" | "PractitionerRole" | "Organization" => "directory",
        "Observation" => {
            let vital = super::search::values_at(resource, "category.coding")
                .iter()
                .any(|c| c.get("code").and_then(Value::as_str) == Some("vital-signs"));
            if vital { "vitals" } else { "clinical" }
        }
        _ => "clinical",
    }
}

/// Whether the resource carries a restricted (R) or very restricted (V) confidentiality
/// label.
pub fn is_restricted(resource: &Value) -> bool {
    super::search::values_at(resource, "meta.security").iter().any(|c| {
        c.get("system").and_then(Value::as_str)
            == Some("http://terminology.hl7.org/CodeSystem/v3-Confidentiality")
            && matches!(c.get("code").and_then(Value::as_str), Some("R" | "V"))
    })
}

/// The patient ids a resource references in its compartment element (`Patient/<id>`).
pub fn referenced_patients(resource_type: &str, resource: &Value) -> Vec<String> {
    let Some(path) = patient_element(resource_type) else { return Vec::new() };
    if path.is_empty() {
        return resource.get("id").and_then(Value::as_str).map(str::to_owned).into_iter().collect();
    }
    super::search::values_at(resource, path)
        .into_iter()
        .filter_map(|r| r.get("reference").and_then(Value::as_str))
        .filter_map(|r| r.strip_prefix("Patient/"))
        .map(str::to_owned)
        .collect()
}

/// One problem with a resource, as an OperationOutcome issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// FHIR issue type: `structure`, `required`, `value`, `code-invalid`, `not-supported`,
    /// `invalid`, ...
    pub code: &'static str,
    /// FHIRPath of the element (`Patient.name[0].given[1]`).
    pub expression: String,
    pub diagnostics: String,
}

/// How many issues one validation reports at most.
pub const MAX_ISSUES: usize = 50;

#[derive(Debug, Clone)]
struct ElementDef {
    name: String,
    /// For a choice element, the allowed type names; otherwise one.
    types: Vec<String>,
    choice: bool,
    min: u32,
    many: bool,
    codes: Option<Vec<String>>,
}

#[derive(Debug, Default)]
struct Defs {
    types: HashMap<String, Vec<ElementDef>>,
}

const PRIMITIVES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "xhtml",
];

fn is_primitive(t: &str) -> bool {
    PRIMITIVES.contains(&t)
}

const RESOURCE_COMMON: &str = "id:id meta:Meta implicitRules:uri language:code text:Narrative contained:Resource* extension:Extension* modifierExtension:Extension*";

fn parse_elements(spec: &str, defs: &HashMap<String, Vec<ElementDef>>) -> Vec<ElementDef> {
    let mut out = Vec::new();
    for tok in spec.split_whitespace() {
        if let Some(base) = tok.strip_prefix('@') {
            out.extend(defs.get(base).cloned().unwrap_or_default());
            continue;
        }
        let Some((name, ty)) = tok.split_once(':') else { continue };
        let (ty, min, many) = match ty.chars().last() {
            Some('*') => (&ty[..ty.len() - 1], 0, true),
            Some('!') => (&ty[..ty.len() - 1], 1, false),
            Some('+') => (&ty[..ty.len() - 1], 1, true),
            _ => (ty, 0, false),
        };
        let (ty, codes) = match ty.split_once('{') {
            Some((t, rest)) => (
                t,
                Some(rest.trim_end_matches('}').split(',').map(str::to_owned).collect::<Vec<_>>()),
            ),
            None => (ty, None),
        };
        let (name, choice) = match name.strip_suffix("[x]") {
            Some(n) => (n, true),
            None => (name, false),
        };
        out.push(ElementDef {
            name: name.to_owned(),
            types: ty.split('|').map(str::to_owned).collect(),
            choice,
            min,
            many,
            codes,
        });
    }
    out
}

fn defs() -> &'static Defs {
    static DEFS: OnceLock<Defs> = OnceLock::new();
    DEFS.get_or_init(|| {
        let mut types: HashMap<String, Vec<ElementDef>> = HashMap::new();
        for line in include_str!("fhir_defs.txt").lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, spec)) = line.split_once(" = ") else { continue };
            let mut elements = parse_elements(spec, &types);
            if RESOURCE_TYPES.contains(&name) {
                let mut common = parse_elements(RESOURCE_COMMON, &types);
                common.append(&mut elements);
                elements = common;
            }
            types.insert(name.to_owned(), elements);
        }
        Defs { types }
    })
}

struct Lexical {
    id: Regex,
    code: Regex,
    date: Regex,
    date_time: Regex,
    instant: Regex,
    time: Regex,
    base64: Regex,
}

fn lexical() -> &'static Lexical {
    static L: OnceLock<Lexical> = OnceLock::new();
    L.get_or_init(|| {
        // The regular expressions of the R4 datatypes page (2.24.0.1), anchored.
        const YEAR: &str = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)";
        const TIME: &str = r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?";
        const ZONE: &str = r"(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))";
        let re = |s: String| Regex::new(&s).unwrap_or_else(|_| unreachable_regex());
        Lexical {
            id: re(r"^[A-Za-z0-9\-\.]{1,64}$".to_owned()),
            code: re(r"^[^\s]+( [^\s]+)*$".to_owned()),
            date: re(format!(r"^{YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$")),
            date_time: re(format!(
                r"^{YEAR}(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T{TIME}{ZONE})?)?)?$"
            )),
            instant: re(format!(
                r"^{YEAR}-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T{TIME}{ZONE}$"
            )),
            time: re(format!("^{TIME}$")),
            base64: re(r"^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$".to_owned()),
        }
    })
}

#[allow(clippy::panic)] // The patterns are literals checked by the tests; this cannot run.
fn unreachable_regex() -> Regex {
    panic!("a built-in FHIR pattern failed to compile")
}

/// Validates `resource` as a `resource_type`. An empty list means valid.
pub fn validate(resource_type: &str, resource: &Value) -> Vec<Issue> {
    let mut v = Validator { issues: Vec::new() };
    let Value::Object(m) = resource else {
        v.issue("structure", resource_type, "the body must be a JSON object".to_owned());
        return v.issues;
    };
    match m.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == resource_type => {}
        Some(t) => v.issue(
            "invalid",
            "resourceType",
            format!("resourceType is {t}, but this endpoint takes {resource_type}"),
        ),
        None => v.issue("required", "resourceType", "resourceType is missing".to_owned()),
    }
    v.object(resource_type, m, resource_type, true);
    v.issues
}

struct Validator {
    issues: Vec<Issue>,
}

fn capitalised(t: &str) -> String {
    let mut c = t.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

impl Validator {
    fn issue(&mut self, code: &'static str, path: &str, diagnostics: String) {
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(Issue { code, expression: path.to_owned(), diagnostics });
        }
    }

    /// Finds the definition of key `k`: an element, or a choice variant (`valueQuantity`).
    fn lookup<'d>(elements: &'d [ElementDef], k: &str) -> Option<(&'d ElementDef, String)> {
        for e in elements {
            if !e.choice && e.name == k {
                return Some((e, e.types[0].clone()));
            }
            if e.choice
                && let Some(suffix) = k.strip_prefix(e.name.as_str())
                && let Some(t) = e.types.iter().find(|t| capitalised(t) == suffix)
            {
                return Some((e, t.clone()));
            }
        }
        None
    }

    fn object(&mut self, type_name: &str, m: &Map<String, Value>, path: &str, is_resource: bool) {
        let Some(elements) = defs().types.get(type_name) else {
            self.issue("not-supported", path, format!("{type_name} is not supported here"));
            return;
        };
        let mut seen_choice: HashMap<&str, &str> = HashMap::new();
        for (k, val) in m {
            if is_resource && k == "resourceType" {
                continue;
            }
            let child = format!("{path}.{k}");
            if let Some(base) = k.strip_prefix('_') {
                // A primitive's id and extensions (JSON representation, 2.6.2.7).
                match Self::lookup(elements, base) {
                    Some((_, t)) if is_primitive(&t) => self.primitive_extension(val, &child),
                    _ => self.issue("structure", &child, format!("unknown element '{k}'")),
                }
                continue;
            }
            let Some((def, ty)) = Self::lookup(elements, k) else {
                self.issue("structure", &child, format!("unknown element '{k}' in {type_name}"));
                continue;
            };
            if def.choice
                && let Some(other) = seen_choice.insert(def.name.as_str(), k.as_str())
            {
                self.issue(
                    "structure",
                    &child,
                    format!("only one of {other} and {k} may be present ({}[x])", def.name),
                );
            }
            if ty == "Resource" {
                self.issue(
                    "not-supported",
                    &child,
                    "contained resources are not supported; create the resource and reference it"
                        .to_owned(),
                );
                continue;
            }
            match (def.many, val) {
                (true, Value::Array(items)) => {
                    if items.is_empty() {
                        self.issue("structure", &child, "an array must not be empty".to_owned());
                    }
                    for (i, item) in items.iter().enumerate() {
                        self.value(&ty, def, item, &format!("{child}[{i}]"));
                    }
                }
                (true, _) => {
                    self.issue("structure", &child, format!("{k} repeats: it must be an array"))
                }
                (false, Value::Array(_)) => self.issue(
                    "structure",
                    &child,
                    format!("{k} occurs at most once: it must not be an array"),
                ),
                (false, item) => self.value(&ty, def, item, &child),
            }
        }
        for e in elements {
            if e.min == 0 {
                continue;
            }
            let present = if e.choice {
                e.types.iter().any(|t| {
                    let key = format!("{}{}", e.name, capitalised(t));
                    m.contains_key(&key) || m.contains_key(&format!("_{key}"))
                })
            } else {
                m.contains_key(&e.name) || m.contains_key(&format!("_{}", e.name))
            };
            if !present {
                let name = if e.choice { format!("{}[x]", e.name) } else { e.name.clone() };
                self.issue(
                    "required",
                    &format!("{path}.{name}"),
                    format!("{name} is required in {type_name}"),
                );
            }
        }
    }

    fn primitive_extension(&mut self, val: &Value, path: &str) {
        let check = |v: &mut Self, item: &Value, p: &str| match item {
            Value::Object(m) => v.object("Element", m, p, false),
            Value::Null => {}
            _ => v.issue("structure", p, "a primitive's extension must be an object".to_owned()),
        };
        match val {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(self, item, &format!("{path}[{i}]"));
                }
            }
            other => check(self, other, path),
        }
    }

    fn value(&mut self, ty: &str, def: &ElementDef, v: &Value, path: &str) {
        if is_primitive(ty) {
            self.primitive(ty, v, path);
            if let (Some(codes), Value::String(s)) = (&def.codes, v)
                && !codes.iter().any(|c| c == s)
            {
                self.issue(
                    "code-invalid",
                    path,
                    format!("'{s}' is not one of: {}", codes.join(", ")),
                );
            }
            return;
        }
        match v {
            Value::Object(m) => {
                if m.is_empty() {
                    self.issue("structure", path, "an element must not be empty".to_owned());
                }
                self.object(ty, m, path, false)
            }
            _ => self.issue("structure", path, format!("expected a {ty} object")),
        }
    }

    fn primitive(&mut self, ty: &str, v: &Value, path: &str) {
        let l = lexical();
        let bad = |v: &mut Self, what: &str| {
            v.issue("value", path, format!("not a valid {ty}: {what}"));
        };
        match ty {
            "boolean" => {
                if !v.is_boolean() {
                    bad(self, "expected true or false");
                }
            }
            "integer" | "positiveInt" | "unsignedInt" => {
                let Some(n) = v.as_i64().filter(|n| i32::try_from(*n).is_ok()) else {
                    return bad(self, "expected a whole number within 32 bits");
                };
                if (ty == "positiveInt" && n < 1) || (ty == "unsignedInt" && n < 0) {
                    bad(self, "out of range");
                }
            }
            "decimal" => {
                if !v.is_number() {
                    bad(self, "expected a number");
                }
            }
            _ => {
                let Some(s) = v.as_str() else { return bad(self, "expected a string") };
                if s.is_empty() {
                    return bad(self, "it must not be empty");
                }
                let ok = match ty {
                    "id" => l.id.is_match(s),
                    "code" => l.code.is_match(s),
                    "date" => l.date.is_match(s) && super::search::parse_date_range(s).is_some(),
                    "dateTime" => {
                        l.date_time.is_match(s) && super::search::parse_date_range(s).is_some()
                    }
                    "instant" => {
                        l.instant.is_match(s) && super::search::parse_date_range(s).is_some()
                    }
                    "time" => l.time.is_match(s),
                    "uri" | "url" | "canonical" => !s.chars().any(char::is_whitespace),
                    "base64Binary" => l.base64.is_match(s),
                    "xhtml" => xhtml_is_safe(s),
                    _ => true,
                };
                if !ok {
                    bad(self, "wrong format");
                }
            }
        }
    }
}

/// A narrative must be a `<div>` and may not carry active content (FHIR narrative rules,
/// 2.4.0: no scripts, forms, event handlers or javascript: links).
fn xhtml_is_safe(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let t = lower.trim();
    t.starts_with("<div")
        && t.ends_with("</div>")
        && ![
            "<script",
            "<form",
            "<iframe",
            "<object",
            "<embed",
            "<base",
            "<link",
            "<meta",
            "javascript:",
        ]
        .iter()
        .any(|bad| t.contains(bad))
        && !regex_on_attr().is_match(t)
}

fn regex_on_attr() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"\son[a-z]+\s*=").unwrap_or_else(|_| unreachable_regex()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(issues: &[Issue]) -> Vec<(&str, &str)> {
        issues.iter().map(|i| (i.code, i.expression.as_str())).collect()
    }

    #[test]
    fn every_type_and_backbone_referenced_is_defined() {
        let d = defs();
        for t in RESOURCE_TYPES {
            assert!(d.types.contains_key(*t), "{t} has no definition");
        }
        for (name, elements) in &d.types {
            for e in elements {
                for t in &e.types {
                    assert!(
                        is_primitive(t) || d.types.contains_key(t) || t == "Resource",
                        "{name}.{} uses undefined type {t}",
                        e.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_good_patient_passes() {
        let p = json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
            "active": true,
            "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
            "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1}],
            "gender": "male",
            "birthDate": "1974-12-25",
            "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
            "deceasedBoolean": false,
            "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Peter</div>"}
        });
        assert_eq!(validate("Patient", &p), vec![]);
    }

    #[test]
    fn errors_name_the_element() {
        let p = json!({
            "resourceType": "Patient",
            "name": {"family": "Chalmers"},
            "gender": "m",
            "birthDate": "1974-02-30",
            "favouriteColour": "blue",
            "deceasedBoolean": false,
            "deceasedDateTime": "2020-01-01",
            "telecom": [{"system": "phone", "rank": 0}]
        });
        let issues = validate("Patient", &p);
        let c = codes(&issues);
        assert!(c.contains(&("structure", "Patient.name")), "{issues:?}");
        assert!(c.contains(&("code-invalid", "Patient.gender")));
        assert!(c.contains(&("value", "Patient.birthDate")));
        assert!(c.contains(&("structure", "Patient.favouriteColour")));
        assert!(c.iter().any(|(k, p)| *k == "structure" && p.starts_with("Patient.deceased")));
        assert!(c.contains(&("value", "Patient.telecom[0].rank")));
    }

    #[test]
    fn observations_need_status_and_code_and_typed_values() {
        let o = json!({"resourceType": "Observation", "valueQuantity": {"value": "high"}});
        let c = validate("Observation", &o);
        let c = codes(&c);
        assert!(c.contains(&("required", "Observation.status")));
        assert!(c.contains(&("required", "Observation.code")));
        assert!(c.contains(&("value", "Observation.valueQuantity.value")));
        let good = json!({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-05-01T10:00:00Z",
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
            ]
        });
        assert_eq!(validate("Observation", &good), vec![]);
        assert_eq!(policy_category("Observation", &good), "vitals");
        assert_eq!(referenced_patients("Observation", &good), vec!["p1"]);
    }

    #[test]
    fn wrong_resource_type_contained_and_unsafe_narrative_are_refused() {
        let c = validate("Patient", &json!({"resourceType": "Observation"}));
        assert_eq!(c[0].code, "invalid");
        let c = validate(
            "Patient",
            &json!({"resourceType": "Patient", "contained": [{"resourceType": "Organization"}]}),
        );
        assert_eq!(c[0].code, "not-supported");
        let c = validate(
            "Patient",
            &json!({"resourceType": "Patient", "text": {"status": "generated", "div": "<div><img src=x onerror=alert(1)></div>"}}),
        );
        assert_eq!(c[0].expression, "Patient.text.div");
        assert!(!validate("Patient", &json!([])).is_empty());
    }

    #[test]
    fn lexical_forms_follow_the_spec() {
        let l = lexical();
        assert!(l.date_time.is_match("2015-02-07T13:28:17.239+02:00"));
        assert!(l.date_time.is_match("2017"));
        assert!(!l.date_time.is_match("2015-02-07T13:28"));
        assert!(!l.date_time.is_match("2015-02-07T13:28:17"));
        assert!(l.instant.is_match("2015-02-07T13:28:17Z"));
        assert!(!l.instant.is_match("2015-02-07"));
        assert!(l.id.is_match("a-b.c") && !l.id.is_match("a b") && !l.id.is_match(&"x".repeat(65)));
        assert!(l.code.is_match("in-progress") && !l.code.is_match(" x"));
        assert!(is_restricted(
            &json!({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}})
        ));
    }
}
