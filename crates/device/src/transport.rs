//! The two ways a batch reaches Telesafe (docs/device-protocol.md §4): HTTPS POSTs of up to
//! 100 batches, and MQTT through the clinic's broker. Both check the server's signature on
//! every answer before believing it: a forged "stored" would make the device drop
//! readings it still holds.

use std::collections::HashMap;
use std::time::Duration;

use telesafe_crypto::sign::{decode_base64url, verify_ed25519};
use telesafe_proto::telemetry::{Ack, SignedBatch};

/// The prefix of the message the server signs over an answer.
pub const ACK_CONTEXT: &[u8] = b"telesafe-ack-v1\n";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing usable came back (no network, server down, timeout): keep the batches.
    #[error("the server could not be reached: {0}")]
    Unreachable(String),
    /// An answer came back that is not a signed acknowledgement from our server.
    #[error("the server's answer could not be trusted: {0}")]
    Untrusted(String),
}

/// Sends batches and returns the server's acknowledgements, one per batch, in order.
#[allow(async_fn_in_trait, reason = "used with concrete types only")]
pub trait Transport {
    /// The most batches one call may carry.
    fn max_batches(&self) -> usize;
    async fn send(&mut self, batches: &[SignedBatch]) -> Result<Vec<Ack>, TransportError>;
}

fn verified(server_key: &[u8], sig_b64: &str, body: &[u8]) -> Result<(), TransportError> {
    let sig = decode_base64url(sig_b64.trim())
        .ok_or_else(|| TransportError::Untrusted("the signature is not base64url".into()))?;
    let mut msg = ACK_CONTEXT.to_vec();
    msg.extend_from_slice(body);
    if verify_ed25519(server_key, &msg, &sig) {
        Ok(())
    } else {
        Err(TransportError::Untrusted("the server's signature does not verify".into()))
    }
}

/// HTTPS: `POST /api/v1/devices/telemetry` with a JSON array of batches.
#[derive(Debug, Clone)]
pub struct Https {
    client: reqwest::Client,
    url: String,
    server_key: Vec<u8>,
}

impl Https {
    /// `client` must trust the server's certificate; `base` is like `https://host:8443`.
    pub fn new(client: reqwest::Client, base: &str, server_key: &[u8]) -> Self {
        Self {
            client,
            url: format!("{}/api/v1/devices/telemetry", base.trim_end_matches('/')),
            server_key: server_key.to_vec(),
        }
    }
}

impl Transport for Https {
    fn max_batches(&self) -> usize {
        100
    }

    async fn send(&mut self, batches: &[SignedBatch]) -> Result<Vec<Ack>, TransportError> {
        let r = self
            .client
            .post(&self.url)
            .json(batches)
            .send()
            .await
            .map_err(|e| TransportError::Unreachable(e.to_string()))?;
        if !r.status().is_success() {
            return Err(TransportError::Unreachable(format!("the server answered {}", r.status())));
        }
        let sig = r
            .headers()
            .get("telesafe-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| TransportError::Untrusted("the answer is not signed".into()))?;
        let body = r.bytes().await.map_err(|e| TransportError::Unreachable(e.to_string()))?;
        verified(&self.server_key, &sig, &body)?;
        let acks: Vec<Ack> = serde_json::from_slice(&body)
            .map_err(|_| TransportError::Untrusted("the answer is not a list of acks".into()))?;
        if acks.len() != batches.len() {
            return Err(TransportError::Untrusted("one acknowledgement per batch expected".into()));
        }
        Ok(acks)
    }
}

/// MQTT: one batch per message on the device's telemetry topic; acknowledgements arrive on
/// its ack topic.
#[derive(Debug)]
pub struct Mqtt {
    client: rumqttc::AsyncClient,
    acks: tokio::sync::mpsc::Receiver<Vec<u8>>,
    topic: String,
    server_key: Vec<u8>,
    /// How long to wait for the next acknowledgement while batches are in flight.
    pub timeout: Duration,
    /// How many batches may be in flight (published, not yet acknowledged) at once.
    pub window: usize,
}

impl Mqtt {
    /// Connects to `broker` (`host:port`) and subscribes to the device's ack topic under
    /// `<root>/<organisation>/devices/<device>/`.
    pub async fn connect(
        broker: &str,
        root: &str,
        organisation: &str,
        device: &str,
        server_key: &[u8],
    ) -> Result<Self, TransportError> {
        use rumqttc::{Event, MqttOptions, Packet, QoS};
        let (host, port) = broker
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?)))
            .ok_or_else(|| TransportError::Unreachable("the broker must be host:port".into()))?;
        let mut opts = MqttOptions::new(format!("telesafe-device-{device}"), host, port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut events) = rumqttc::AsyncClient::new(opts, 256);
        // Small messages go out at once: with Nagle's algorithm a message waits for the
        // previous one's TCP acknowledgement, which the peer may delay by 40 ms.
        let mut net = events.network_options();
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        let (tx, acks) = tokio::sync::mpsc::channel(1024);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let base = format!("{root}/{organisation}/devices/{device}");
        let ack_topic = format!("{base}/ack");
        let sub = client.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.subscribe(ack_topic.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p.payload.to_vec()).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) if tx.is_closed() => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready)
            .await
            .map_err(|_| TransportError::Unreachable("the broker did not answer".into()))?
            .map_err(|_| TransportError::Unreachable("the connection closed".into()))?;
        Ok(Self {
            client,
            acks,
            topic: format!("{base}/telemetry"),
            server_key: server_key.to_vec(),
            timeout: Duration::from_secs(30),
            window: 100,
        })
    }
}

impl Transport for Mqtt {
    fn max_batches(&self) -> usize {
        100
    }

    /// Keeps up to `window` batches in flight: each acknowledgement that comes back lets
    /// the next batch go, so the broker and the server always have work (a window sent
    /// whole and then waited for leaves both idle for a round trip per window). The
    /// window is bounded because a broker drops QoS 1 messages beyond a slow
    /// subscriber's queue (Mosquitto keeps 1,000 by default), and a dropped batch only
    /// comes back on the next delivery round. Fails if `timeout` passes with no
    /// acknowledgement for a batch in flight; the caller keeps every unacknowledged
    /// batch and sends it again later (the server answers a repeat as a duplicate).
    async fn send(&mut self, batches: &[SignedBatch]) -> Result<Vec<Ack>, TransportError> {
        let window = self.window.max(1);
        let mut answers: Vec<Option<Ack>> = vec![None; batches.len()];
        // Where each sequence number is in `batches` (a caller may repeat one).
        let mut at: HashMap<u64, Vec<usize>> = HashMap::with_capacity(batches.len());
        for (i, b) in batches.iter().enumerate() {
            at.entry(b.batch.seq).or_default().push(i);
        }
        let (mut published, mut in_flight) = (0, 0);
        let mut deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            while published < batches.len() && in_flight < window {
                self.publish(&batches[published]).await?;
                published += 1;
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let raw = tokio::time::timeout_at(deadline, self.acks.recv())
                .await
                .map_err(|_| TransportError::Unreachable("no acknowledgement in time".into()))?
                .ok_or_else(|| TransportError::Unreachable("the connection closed".into()))?;
            let Some(nl) = raw.iter().position(|b| *b == b'\n') else { continue };
            let (sig, body) = (&raw[..nl], &raw[nl + 1..]);
            verified(&self.server_key, &String::from_utf8_lossy(sig), body)?;
            let acks: Vec<Ack> = serde_json::from_slice(body)
                .map_err(|_| TransportError::Untrusted("not a list of acks".into()))?;
            for ack in acks {
                let seq = match &ack {
                    Ack::Stored { seq, .. } | Ack::Duplicate { seq } => Some(*seq),
                    Ack::Refused { seq, .. } => *seq,
                };
                // An answer to an earlier call (a resend's second ack) is simply ignored.
                let slot = seq.and_then(|s| at.get(&s)).and_then(|is| {
                    is.iter().copied().find(|&i| i < published && answers[i].is_none())
                });
                if let Some(i) = slot {
                    answers[i] = Some(ack);
                    in_flight -= 1;
                    deadline = tokio::time::Instant::now() + self.timeout;
                }
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }
}

impl Mqtt {
    async fn publish(&self, batch: &SignedBatch) -> Result<(), TransportError> {
        let payload =
            serde_json::to_vec(batch).map_err(|e| TransportError::Unreachable(e.to_string()))?;
        self.client
            .publish(&self.topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| TransportError::Unreachable(e.to_string()))
    }
}
