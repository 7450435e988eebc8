//! The MQTT transport for devices: Telesafe is a client of the configured broker
//! (`[mqtt] broker`), subscribes to `<root>/<organisation>/devices/+/telemetry`, files
//! batches through the same path as HTTPS (`devices::on_topics`), and publishes signed
//! acknowledgements on each device's own `<root>/<organisation>/devices/<id>/ack` topic
//! (`<root>` is `[mqtt] topic_root`, `telesafe` by default).
//!
//! Messages that arrive while earlier ones are being filed wait and are filed together as
//! one group (one lookup per device, one audit append, one write), so the per-message
//! cost falls as load rises, as group commit does for a database. A group's answers to
//! one device go out as one message: the base64url server signature, a line feed, then
//! the JSON array of that device's acknowledgements in arrival order (the signature
//! covers `telesafe-ack-v1\n` and those JSON bytes, as on HTTPS).
//!
//! rumqttc runs without its TLS feature (its TLS stack pulls a vulnerable certificate
//! verifier): the broker must be on this host or reached through a TLS tunnel; the
//! batches are signed end to end either way.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use telesafe_proto::telemetry::{Ack, Reason};

use crate::state::AppState;

/// The most messages filed as one group.
const MAX_GROUP: usize = 512;
/// Lanes filing groups at once (their audit appends and writes are grouped further by
/// the audit log and the device writer). A device always uses the same lane, so its
/// groups are filed one after another, in the order they arrived: a group never judges
/// a device's sequence numbers while an earlier group of the same device is unwritten
/// (which would record a gap that is not there).
const LANES: usize = 4;
/// Messages waiting in a lane; beyond it the bridge stops reading from the broker.
const QUEUE: usize = 2 * MAX_GROUP;

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
    // Small messages go out at once: with Nagle's algorithm a message waits for the
    // previous one's TCP acknowledgement, which the peer may delay by 40 ms.
    let mut net = events.network_options();
    net.set_tcp_nodelay(true);
    events.set_network_options(net);
    let lanes: Vec<_> = (0..LANES)
        .map(|_| {
            let (lane, waiting) = tokio::sync::mpsc::channel(QUEUE);
            tokio::spawn(file_groups(state.clone(), client.clone(), waiting));
            lane
        })
        .collect();
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
                if lanes[lane(&p.topic)].send(p).await.is_err() {
                    return;
                }
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

/// The lane of a topic's device (the whole topic stands in for it: one device, one
/// telemetry topic).
fn lane(topic: &str) -> usize {
    crate::devices::spread(topic, LANES)
}

/// One lane: takes whatever messages are waiting (at least one, at most `MAX_GROUP`)
/// once the previous group is filed, and files them as one group.
async fn file_groups(
    state: AppState,
    client: AsyncClient,
    mut waiting: tokio::sync::mpsc::Receiver<rumqttc::Publish>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while waiting.recv_many(&mut group, MAX_GROUP).await > 0 {
        state.metrics.mqtt_group_size.observe(group.len() as f64);
        file_group(&state, &client, &group).await;
        group.clear();
    }
}

async fn file_group(state: &AppState, client: &AsyncClient, group: &[rumqttc::Publish]) {
    let root = &state.config.mqtt.topic_root;
    let messages: Vec<(&str, &str, &[u8])> = group
        .iter()
        .filter_map(|p| topic_parts(root, &p.topic).map(|(org, dev)| (org, dev, &p.payload[..])))
        .collect();
    let acks = match crate::devices::on_topics(state, &messages).await {
        Ok(acks) => acks,
        // Storage is failing: no acknowledgement, so the devices keep their batches and
        // send them again.
        Err(e) => {
            e.log();
            return;
        }
    };
    // One answer per device, its acknowledgements in the order its messages arrived.
    let mut answers: Vec<((&str, &str), Vec<Ack>)> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for ((org, device, _), ack) in messages.iter().zip(acks) {
        let i = *index.entry((*org, *device)).or_insert_with(|| {
            answers.push(((*org, *device), Vec::new()));
            answers.len() - 1
        });
        answers[i].1.push(ack);
    }
    for ((org, device), acks) in answers {
        let (body, sig) = crate::devices::signed_answer(state, &acks);
        let mut out = sig.into_bytes();
        out.push(b'\n');
        out.extend_from_slice(&body);
        let ack_topic = format!("{root}/{org}/devices/{device}/ack");
        if let Err(e) = client.publish(ack_topic, QoS::AtLeastOnce, false, out).await {
            tracing::warn!(error = %e, "could not publish a device acknowledgement");
        }
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
