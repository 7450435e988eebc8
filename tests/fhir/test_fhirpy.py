"""Interop: an unmodified FHIR client (fhirpy) against Telesafe's FHIR API, with every
resource the server returns validated by an independent R4 model (fhir.resources 6.4.0,
FHIR 4.0.1).

Run by crates/testkit/tests/fhir_interop.rs with:
  TELESAFE_FHIR_BASE   https://localhost:<port>/fhir
  TELESAFE_FHIR_TOKEN  a bearer token from client credentials
  TELESAFE_CA          the server's certificate (PEM) to trust
"""

import os
import sys

import requests
from fhir.resources import construct_fhir_element
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

BASE = os.environ["TELESAFE_FHIR_BASE"]
TOKEN = os.environ["TELESAFE_FHIR_TOKEN"]
CA = os.environ["TELESAFE_CA"]
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/fhir+json"}

checked = 0


def valid(data):
    """Parses `data` with the R4 model: raises if it is not a valid R4 resource."""
    global checked
    data = dict(data)
    construct_fhir_element(data["resourceType"], data)
    checked += 1
    return data


def raw(path):
    r = requests.get(BASE + path, headers=HEADERS, verify=CA, timeout=30)
    assert r.status_code == 200, (path, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = valid(r.json())
    for e in body.get("entry", []):
        if "resource" in e:
            valid(e["resource"])
    return body


def main():
    client = SyncFHIRClient(BASE, authorization=f"Bearer {TOKEN}", requests_config={"verify": CA, "timeout": 30})

    cap = raw("/metadata")
    assert cap["fhirVersion"] == "4.0.1"

    # Create, read, update.
    p = client.resource(
        "Patient",
        identifier=[{"system": "urn:example:mrn", "value": "FP-1001"}],
        name=[{"use": "official", "family": "Okafor", "given": ["Chidi"]}],
        gender="male",
        birthDate="1980-04-01",
    )
    p.save()
    assert p.id and p["meta"]["versionId"] == "1", p.serialize()
    valid(p.serialize())
    read = client.reference("Patient", p.id).to_resource()
    assert read["name"][0]["family"] == "Okafor"
    valid(read.serialize())
    read["telecom"] = [{"system": "phone", "value": "+44 20 7946 0958", "use": "mobile"}]
    read.save()
    assert read["meta"]["versionId"] == "2", read.serialize()
    valid(read.serialize())

    # Search by name (case folded), birth date, identifier, phone.
    for params in ({"family": "okafor"}, {"birthdate": "1980-04-01"}, {"identifier": "urn:example:mrn|FP-1001"}, {"phone": "442079460958"}):
        found = client.resources("Patient").search(**params).fetch()
        assert [r.id for r in found] == [p.id], (params, [r.id for r in found])
        for r in found:
            valid(r.serialize())
    assert client.resources("Patient").search(family="nobody-by-this-name").fetch() == []

    # Observations of that patient; searched by code and date, fetched across pages.
    ids = []
    for value, at in ((72, "2024-05-01T08:00:00Z"), (91, "2024-05-02T08:00:00Z"), (66, "2024-05-03T08:00:00Z")):
        o = client.resource(
            "Observation",
            status="final",
            category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            subject={"reference": f"Patient/{p.id}"},
            effectiveDateTime=at,
            valueQuantity={"value": value, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"},
        )
        o.save()
        valid(o.serialize())
        ids.append(o.id)
    every = client.resources("Observation").search(patient=p.id).limit(2).fetch_all()
    assert sorted(r.id for r in every) == sorted(ids), [r.id for r in every]
    later = client.resources("Observation").search(patient=p.id, code="http://loinc.org|8867-4", date="ge2024-05-02").fetch()
    assert sorted(r.id for r in later) == sorted(ids[1:])
    raw(f"/Observation?patient={p.id}&_count=2")
    raw(f"/Patient/{p.id}/_history")
    raw(f"/Observation/{ids[0]}/_history/1")
    everything = raw(f"/Patient/{p.id}/$everything")
    assert everything["total"] == 4, everything["total"]

    # Invalid input comes back as a valid OperationOutcome, through the client and raw.
    try:
        client.resource("Patient", gender="m").save()
        raise AssertionError("an invalid gender was accepted")
    except OperationOutcome:
        pass
    r = requests.post(BASE + "/Patient", json={"resourceType": "Patient", "gender": "m"}, headers=HEADERS, verify=CA, timeout=30)
    assert r.status_code == 400
    outcome = valid(r.json())
    assert outcome["issue"][0]["expression"] == ["Patient.gender"], outcome

    # Delete: gone from reads and searches.
    client.reference("Observation", ids[0]).to_resource().delete()
    try:
        client.reference("Observation", ids[0]).to_resource()
        raise AssertionError("a deleted observation was still readable")
    except ResourceNotFound:
        pass
    left = client.resources("Observation").search(patient=p.id).fetch_all()
    assert sorted(r.id for r in left) == sorted(ids[1:])
    client.reference("Patient", p.id).to_resource().delete()
    try:
        client.reference("Patient", p.id).to_resource()
        raise AssertionError("a deleted patient was still readable")
    except ResourceNotFound:
        pass
    # Every other resource type, with nested elements, round-trips and validates as R4.
    client.resource("Patient", name=[{"family": "Ngata"}], birthDate="1961-02-03").save()
    pat = client.resources("Patient").search(family="ngata").fetch()[0]
    subject = {"reference": f"Patient/{pat.id}"}
    org = client.resource("Organization", name="Riverside Clinic", active=True,
                          type=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
                          telecom=[{"system": "phone", "value": "+1 555 0100"}])
    org.save()
    doc = client.resource("Practitioner", name=[{"family": "Rivera", "given": ["Sam"], "prefix": ["Dr."]}],
                          qualification=[{"code": {"text": "MD"}}], gender="other")
    doc.save()
    samples = [
        ("PractitionerRole", {"practitioner": {"reference": f"Practitioner/{doc.id}"}, "organization": {"reference": f"Organization/{org.id}"},
                              "code": [{"text": "General practice"}],
                              "availableTime": [{"daysOfWeek": ["mon", "wed"], "availableStartTime": "09:00:00", "availableEndTime": "17:00:00"}]}),
        ("CareTeam", {"status": "active", "subject": subject, "participant": [{"member": {"reference": f"Practitioner/{doc.id}"}, "role": [{"text": "GP"}]}]}),
        ("Encounter", {"status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR", "display": "virtual"},
                       "subject": subject, "period": {"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T09:20:00Z"},
                       "participant": [{"individual": {"reference": f"Practitioner/{doc.id}"}}]}),
        ("Condition", {"clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                       "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]},
                       "subject": subject, "onsetDateTime": "2019-03-01", "note": [{"text": "Diet controlled."}]}),
        ("AllergyIntolerance", {"patient": subject, "code": {"text": "Penicillin"}, "criticality": "high", "category": ["medication"],
                                "reaction": [{"manifestation": [{"text": "Hives"}], "severity": "moderate"}]}),
        ("MedicationRequest", {"status": "active", "intent": "order", "subject": subject, "medicationCodeableConcept": {"text": "Metformin 500 mg"},
                               "dosageInstruction": [{"text": "Twice daily with meals", "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                                                      "doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}]}]}),
        ("Appointment", {"status": "booked", "start": "2024-06-01T09:00:00Z", "end": "2024-06-01T09:20:00Z",
                         "participant": [{"actor": subject, "status": "accepted"}, {"actor": {"reference": f"Practitioner/{doc.id}"}, "status": "accepted"}]}),
        ("Communication", {"status": "completed", "subject": subject, "sent": "2024-05-02T10:00:00Z", "payload": [{"contentString": "Your results are normal."}]}),
        ("Consent", {"status": "active", "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                     "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "patient": subject,
                     "provision": {"type": "deny", "class": [{"system": "urn:telesafe:policy-category", "code": "messaging"}]}}),
        ("Device", {"status": "active", "patient": subject, "manufacturer": "Acme", "serialNumber": "SN-1",
                    "deviceName": [{"name": "Pulse oximeter", "type": "user-friendly-name"}]}),
        ("DocumentReference", {"status": "current", "subject": subject, "date": "2024-05-01T10:00:00Z",
                               "content": [{"attachment": {"contentType": "text/plain", "data": "Tm8gY29uY2VybnMu", "title": "Visit note"}}]}),
    ]
    for rtype, body in samples:
        r = client.resource(rtype, **body)
        r.save()
        back = client.reference(rtype, r.id).to_resource()
        valid(back.serialize())
        found = client.resources(rtype).search(_id=r.id).fetch()
        assert [x.id for x in found] == [r.id], rtype
    for rtype in ("Organization", "Practitioner"):
        raw(f"/{rtype}?_count=5")

    # AuditEvents from the tamper-evident log, read by the patient they are about: valid
    # R4, and only hers.
    me = os.environ["TELESAFE_PATIENT_ID"]
    mine = {"Authorization": f"Bearer {os.environ['TELESAFE_PATIENT_TOKEN']}", "Accept": "application/fhir+json"}
    r = requests.get(f"{BASE}/AuditEvent?_count=5", headers=mine, verify=CA, timeout=30)
    assert r.status_code == 200, r.text
    events = valid(r.json())
    assert events["total"] > 0
    for e in events["entry"]:
        ev = valid(e["resource"])
        assert any(x.get("what", {}).get("reference") == f"Patient/{me}" for x in ev["entity"]), ev
    one = requests.get(f"{BASE}/AuditEvent/{events['entry'][0]['resource']['id']}", headers=mine, verify=CA, timeout=30)
    assert one.status_code == 200
    valid(one.json())
    print(f"fhirpy interop ok: {checked} resources validated as FHIR R4 (4.0.1)")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        raise
