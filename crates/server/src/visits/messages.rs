//! The messages a visit page sends over its socket, checked field by field
//! (`docs/visit-signaling.md`). Anything else closes the socket with a reason.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The most a frame may hold.
pub const MAX_FRAME: usize = 64 * 1024;
/// The longest chat message, in characters.
pub const MAX_CHAT: usize = 2000;
/// The longest identity note, in characters.
pub const MAX_NOTE: usize = 500;

/// A checked message from a page.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    /// A description or candidate for one peer, as it will be relayed.
    Signal {
        to: String,
        payload: Value,
    },
    Chat {
        text: String,
    },
    Status {
        audio_only: bool,
    },
    Admit,
    Identity {
        method: telesafe_core::visits::IdentityMethod,
        note: String,
    },
    End,
    Ping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalIn {
    to: String,
    #[serde(default)]
    description: Option<Description>,
    // Present and null means "end of candidates"; absent means no candidate.
    #[serde(default, deserialize_with = "present")]
    candidate: Option<Option<Candidate>>,
}

fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Description {
    #[serde(rename = "type")]
    kind: SdpKind,
    sdp: String,
}

#[derive(Deserialize, serde::Serialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum SdpKind {
    Offer,
    Answer,
}

#[derive(Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Candidate {
    candidate: String,
    #[serde(default)]
    sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    sdp_m_line_index: Option<u16>,
    #[serde(default)]
    username_fragment: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatIn {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StatusIn {
    audio_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityIn {
    method: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn fields<T: DeserializeOwned>(kind: &str, v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{kind}: {e}"))
}

/// Whether `s` is a peer id as pages make them (`crypto.randomUUID()`).
pub fn valid_peer(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn bounded(what: &str, s: &Option<String>, max: usize) -> Result<(), String> {
    match s {
        Some(s) if s.len() > max => Err(format!("signal: {what} is too long")),
        _ => Ok(()),
    }
}

/// Parses and checks one text frame. The error is the close reason (at most 123 bytes, as
/// WebSocket close reasons must be).
pub fn parse(text: &str) -> Result<ClientMsg, String> {
    let mut v: Value = serde_json::from_str(text).map_err(|_| "not JSON".to_owned())?;
    let Some(obj) = v.as_object_mut() else { return Err("not a JSON object".into()) };
    let kind = match obj.remove("type") {
        Some(Value::String(k)) => k,
        _ => return Err("no \"type\"".into()),
    };
    let msg = match kind.as_str() {
        "signal" => {
            let s: SignalIn = fields("signal", v)?;
            if !valid_peer(&s.to) {
                return Err("signal: \"to\" is not a peer id".into());
            }
            let payload = match (s.description, s.candidate) {
                (Some(d), None) => {
                    if d.sdp.len() > MAX_FRAME {
                        return Err("signal: sdp is too long".into());
                    }
                    json!({"description": d})
                }
                (None, Some(c)) => {
                    if let Some(c) = &c {
                        if c.candidate.len() > 1024 {
                            return Err("signal: candidate is too long".into());
                        }
                        bounded("sdpMid", &c.sdp_mid, 64)?;
                        bounded("usernameFragment", &c.username_fragment, 256)?;
                    }
                    json!({"candidate": c})
                }
                _ => return Err("signal: exactly one of description or candidate".into()),
            };
            ClientMsg::Signal { to: s.to, payload }
        }
        "chat" => {
            let c: ChatIn = fields("chat", v)?;
            let text = c.text.trim().to_owned();
            let n = text.chars().count();
            if n == 0 || n > MAX_CHAT {
                return Err(format!("chat: text must be 1 to {MAX_CHAT} characters"));
            }
            ClientMsg::Chat { text }
        }
        "status" => ClientMsg::Status { audio_only: fields::<StatusIn>("status", v)?.audio_only },
        "identity" => {
            let i: IdentityIn = fields("identity", v)?;
            let method = telesafe_core::visits::IdentityMethod::parse(&i.method)
                .ok_or_else(|| "identity: unknown method".to_owned())?;
            let note = i.note.trim().to_owned();
            if note.chars().count() > MAX_NOTE {
                return Err(format!("identity: note over {MAX_NOTE} characters"));
            }
            if method == telesafe_core::visits::IdentityMethod::Other && note.is_empty() {
                return Err("identity: \"other\" needs a note".into());
            }
            ClientMsg::Identity { method, note }
        }
        "admit" | "end" | "ping" => {
            fields::<Empty>(&kind, v)?;
            match kind.as_str() {
                "admit" => ClientMsg::Admit,
                "end" => ClientMsg::End,
                _ => ClientMsg::Ping,
            }
        }
        _ => return Err("unknown message type".into()),
    };
    Ok(msg)
}

/// Cuts a close reason to the 123 bytes a close frame allows, on a character boundary.
pub fn close_reason(s: &str) -> String {
    let mut end = s.len().min(123);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A token bucket: `burst` messages at once, refilled at `per_sec`.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: std::time::Instant,
}

impl RateLimit {
    pub fn new(burst: u32, per_sec: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            last: std::time::Instant::now(),
        }
    }

    /// Takes one token; false when none is left.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "0b9d2c1e-6c7a-4a43-9a7e-3f1c2b4d5e6f";

    #[test]
    fn good_messages_parse() {
        let offer = format!(
            r#"{{"type":"signal","to":"{PEER}","description":{{"type":"offer","sdp":"v=0"}}}}"#
        );
        assert!(matches!(parse(&offer), Ok(ClientMsg::Signal { .. })));
        let end = format!(r#"{{"type":"signal","to":"{PEER}","candidate":null}}"#);
        let Ok(ClientMsg::Signal { payload, .. }) = parse(&end) else { panic!() };
        assert_eq!(payload, json!({"candidate": null}));
        let cand = format!(
            r#"{{"type":"signal","to":"{PEER}","candidate":{{"candidate":"candidate:1 1 udp 1 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ab"}}}}"#
        );
        assert!(parse(&cand).is_ok());
        assert_eq!(
            parse(r#"{"type":"chat","text":"  hello "}"#),
            Ok(ClientMsg::Chat { text: "hello".into() })
        );
        assert_eq!(parse(r#"{"type":"admit"}"#), Ok(ClientMsg::Admit));
        assert_eq!(
            parse(r#"{"type":"status","audioOnly":true}"#),
            Ok(ClientMsg::Status { audio_only: true })
        );
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        let cases = [
            ("[]", "not a JSON object"),
            ("{", "not JSON"),
            (r#"{"type":"dance"}"#, "unknown message type"),
            (r#"{"type":"admit","extra":1}"#, "admit"),
            (r#"{"type":"chat","text":"   "}"#, "chat"),
            (r#"{"type":"signal","to":"x","candidate":null}"#, "peer id"),
            (r#"{"type":"identity","method":"other"}"#, "needs a note"),
            (r#"{"type":"identity","method":"psychic"}"#, "unknown method"),
        ];
        for (input, want) in cases {
            let err = parse(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
            assert!(close_reason(&err).len() <= 123);
        }
        let both = format!(
            r#"{{"type":"signal","to":"{PEER}","candidate":null,"description":{{"type":"offer","sdp":""}}}}"#
        );
        assert!(parse(&both).unwrap_err().contains("exactly one"));
        let neither = format!(r#"{{"type":"signal","to":"{PEER}"}}"#);
        assert!(parse(&neither).unwrap_err().contains("exactly one"));
        let long = format!(r#"{{"type":"chat","text":"{}"}}"#, "a".repeat(MAX_CHAT + 1));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_refill_rate() {
        let t0 = std::time::Instant::now();
        let mut r = RateLimit::new(80, 40);
        assert_eq!((0..100).filter(|_| r.take(t0)).count(), 80);
        let later = t0 + std::time::Duration::from_millis(500);
        assert_eq!((0..100).filter(|_| r.take(later)).count(), 20);
    }
}
