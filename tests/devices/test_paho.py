"""Interop: a device written from docs/device-protocol.md alone (no Telesafe code): it
makes its own Ed25519 key (cryptography), enrols over HTTPS, signs canonical-JSON batches,
publishes them through Mosquitto with paho-mqtt, checks the server's signed
acknowledgements, and the readings come back as FHIR Observations.

Run by crates/testkit/tests/device_interop.rs with:
  TELESAFE_BASE          https://localhost:<port>
  TELESAFE_CA            the server's certificate (PEM)
  TELESAFE_MQTT          host:port of the broker
  TELESAFE_ORG           the organisation code
  TELESAFE_MQTT_ROOT     the first topic level (the server's [mqtt] topic_root)
  TELESAFE_CODE          a one-time enrolment code
  TELESAFE_PATIENT_ID    the patient it was enrolled for
  TELESAFE_FHIR_TOKEN    a bearer token that may read Observations
"""

import base64
import datetime
import json
import os
import queue
import sys

import paho.mqtt.client as mqtt
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fhir.resources import construct_fhir_element

BASE = os.environ["TELESAFE_BASE"]
CA = os.environ["TELESAFE_CA"]


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def canonical(obj) -> bytes:
    # docs/device-protocol.md §3: sorted keys, no whitespace, strings and integers only.
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main():
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    r = requests.post(f"{BASE}/api/v1/devices/enroll", json={
        "code": os.environ["TELESAFE_CODE"], "public_key": b64url(public),
        "serial": "PY-0001", "firmware": "3.0.0"}, verify=CA, timeout=30)
    assert r.status_code == 201, r.text
    server = Ed25519PublicKey.from_public_bytes(unb64url(r.json()["server_public_key"]))
    server.verify(unb64url(r.headers["Telesafe-Signature"]), b"telesafe-ack-v1\n" + r.content)
    device = r.json()["device_id"]

    org = os.environ["TELESAFE_ORG"]
    root = os.environ.get("TELESAFE_MQTT_ROOT", "telesafe")
    acks: "queue.Queue[bytes]" = queue.Queue()
    host, port = os.environ["TELESAFE_MQTT"].rsplit(":", 1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"py-{device}")
    subscribed = queue.Queue()
    client.on_message = lambda c, u, m: acks.put(m.payload)
    client.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(mid)
    client.connect(host, int(port))
    client.loop_start()
    client.subscribe(f"{root}/{org}/devices/{device}/ack", qos=1)
    subscribed.get(timeout=10)

    def send(batch):
        sig = key.sign(b"telesafe-telemetry-v1\n" + canonical(batch))
        client.publish(f"{root}/{org}/devices/{device}/telemetry",
                       json.dumps({"batch": batch, "sig": b64url(sig)}), qos=1).wait_for_publish(10)
        raw = acks.get(timeout=20)
        sig_line, body = raw.split(b"\n", 1)
        server.verify(unb64url(sig_line.decode()), b"telesafe-ack-v1\n" + body)
        return json.loads(body)[0]

    # Readings from yesterday: recent enough to count (the server refuses readings over a
    # week old as stale), and never in the future.
    day = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)).date().isoformat()
    batches = []
    for seq, (at, value) in enumerate([(f"{day}T08:00:00Z", "61"), (f"{day}T09:00:00Z", "64"),
                                        (f"{day}T10:00:00Z", "95")], start=1):
        batch = {"clock": f"{day}T10:05:00Z", "device": device, "firmware": "3.0.0", "seq": seq,
                 "readings": [{"at": at, "code": "8867-4", "unit": "/min", "value": value}]}
        ack = send(batch)
        assert ack == {"status": "stored", "seq": seq, "gap_from": None, "quarantined": None}, ack
        batches.append(batch)
    assert send(batches[1])["status"] == "duplicate"
    tampered = dict(batches[2], seq=4)
    sig = key.sign(b"telesafe-telemetry-v1\n" + canonical(tampered))
    tampered["readings"] = [{"at": f"{day}T10:00:00Z", "code": "8867-4", "unit": "/min", "value": "30"}]
    client.publish(f"{root}/{org}/devices/{device}/telemetry",
                   json.dumps({"batch": tampered, "sig": b64url(sig)}), qos=1).wait_for_publish(10)
    raw = acks.get(timeout=20)
    assert json.loads(raw.split(b"\n", 1)[1])[0]["reason"] == "bad_signature"
    client.loop_stop()

    headers = {"Authorization": f"Bearer {os.environ['TELESAFE_FHIR_TOKEN']}", "Accept": "application/fhir+json"}
    pid = os.environ["TELESAFE_PATIENT_ID"]
    r = requests.get(f"{BASE}/fhir/Observation?patient={pid}&date={day}&_sort=date", headers=headers, verify=CA, timeout=30)
    assert r.status_code == 200, r.text
    bundle = r.json()
    construct_fhir_element("Bundle", dict(bundle))
    # The record may hold that day's readings from elsewhere too (the demo clinic's own).
    mine = [e for e in bundle["entry"] if e["resource"].get("device", {}).get("reference") == f"Device/{device}"]
    values = [e["resource"]["valueQuantity"]["value"] for e in mine]
    assert values == [61, 64, 95], values
    for e in mine:
        construct_fhir_element("Observation", dict(e["resource"]))
        assert e["resource"]["device"]["reference"] == f"Device/{device}"
    print(f"paho device interop ok: enrolled {device}, 3 batches stored once, replay and forgery answered, 3 Observations")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        raise
