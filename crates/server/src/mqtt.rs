//! The MQTT transport for devices: Telesafe is a client of the configured broker
//! (`[mqtt] broker`), subscribes to `<root>/<organisation>/devices/+/telemetry`, files
//! each batch through the same path as HTTPS (`devices::one`), and publishes the signed
//! acknowledgement on the device's own `<root>/<organisation>/devices/<id>/ack` topic
//! (`<root>` is `[mqtt] topic_root`, `telesafe` by default).
//!
//! An acknowledgement's payload is the base64url server signature, a line feed, then the
//! JSON array of one acknowledgement (the signature covers `telesafe-ack-v1\n` and those
//! JSON bytes, as on HTTPS). rumqttc runs without its TLS feature (its TLS stack pulls a
//! vulnerable certificate verifier): the broker must be on this host or reached through a
//! TLS tunnel; the batches are signed end to end either way.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use telesafe_proto::telemetry::{Ack, Reason};

use crate::state::AppState;

/// The most batches handled at once.
const IN_FLIGHT: usize = 128;

/// Starts the bridge when a broker is configured.
pub fn spawn(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    let broker = state.config.mqtt.broker.clone()?;
    Some(tokio::spawn(run(state, broker)))
}

fn split_host_port(broker: &str) -> Option<(String, u16)> {
    let (host, port) = broker.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

async fn run(state: AppState, broker: String) {
    let Some((host, port)) = split_host_port(&broker) else {
        tracing::error!("mqtt.broker must be host:port; the MQTT transport is off");
        return;
    };
    let mut opts = MqttOptions::new(state.config.mqtt.client_id.clone(), host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(
        telesafe_proto::telemetry::MAX_BATCH_BYTES + 1024,
        telesafe_proto::telemetry::MAX_BATCH_BYTES + 1024,
    );
    let (client, mut events) = AsyncClient::new(opts, 256);
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut backoff = Duration::from_millis(250);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                tracing::info!("connected to the MQTT broker");
                let filter = format!("{}/+/devices/+/telemetry", state.config.mqtt.topic_root);
                if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                    tracing::error!(error = %e, "could not subscribe to device telemetry");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let (state, client, gate) = (state.clone(), client.clone(), gate.clone());
                tokio::spawn(async move {
                    let Ok(_permit) = gate.acquire_owned().await else { return };
                    handle(&state, &client, &p.topic, &p.payload).await;
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// `(organisation, device)` from `<root>/<organisation>/devices/<device>/telemetry`.
fn topic_parts<'t>(root: &str, topic: &'t str) -> Option<(&'t str, &'t str)> {
    let mut it = topic.split('/');
    match (it.next(), it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some(r), Some(org), Some("devices"), Some(dev), Some("telemetry"), None) if r == root => {
            Some((org, dev))
        }
        _ => None,
    }
}

async fn handle(state: &AppState, client: &AsyncClient, topic: &str, payload: &[u8]) {
    let root = &state.config.mqtt.topic_root;
    let Some((org, device)) = topic_parts(root, topic) else { return };
    let ack = match crate::devices::one_on_topic(state, payload, org, device).await {
        Ok(ack) => ack,
        // Storage is failing: no acknowledgement, so the device keeps the batch and
        // sends it again.
        Err(e) => {
            e.log();
            return;
        }
    };
    let body = serde_json::to_vec(&[ack]).unwrap_or_default();
    let mut msg = crate::devices::ACK_CONTEXT.to_vec();
    msg.extend_from_slice(&body);
    let sig = telesafe_crypto::sign::encode_base64url(&state.device_signer.sign(&msg));
    let mut out = sig.into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&body);
    let ack_topic = format!("{root}/{org}/devices/{device}/ack");
    if let Err(e) = client.publish(ack_topic, QoS::AtLeastOnce, false, out).await {
        tracing::warn!(error = %e, "could not publish a device acknowledgement");
    }
}

/// An acknowledgement for a batch whose topic does not match its device.
pub(crate) fn wrong_topic(seq: Option<u64>) -> Ack {
    Ack::Refused { seq, reason: Reason::UnknownDevice }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_brokers_parse() {
        let t = |topic| topic_parts("telesafe", topic);
        assert_eq!(t("telesafe/demo/devices/d1/telemetry"), Some(("demo", "d1")));
        assert_eq!(t("telesafe/demo/devices/d1/ack"), None);
        assert_eq!(t("telesafe/demo/devices/d1/telemetry/x"), None);
        assert_eq!(t("other/demo/devices/d1/telemetry"), None);
        assert_eq!(split_host_port("127.0.0.1:1883"), Some(("127.0.0.1".into(), 1883)));
        assert_eq!(split_host_port("[::1]:1883"), Some(("::1".into(), 1883)));
        assert_eq!(split_host_port("broker"), None);
    }
}
