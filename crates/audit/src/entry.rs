//! One audit entry and its canonical encoding: the bytes a Merkle leaf hashes.
//!
//! The encoding is hand-written because it must be byte-for-byte stable forever and
//! simple enough for an auditor to re-implement from `docs/security-model.md`: the magic
//! `TSAE1`, then each field in a fixed order, each a 4-byte big-endian length followed by
//! that many bytes (UTF-8 text, or the decimal form of a number). No field is optional in
//! the encoding: an absent value is the empty string.
//!
//! Entries hold ids, codes and purposes only: never a name, a note or a clinical value.

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorKind {
    User,
    Client,
    Device,
    System,
    /// A patient acting through a video-visit link and pass (no account); the id is the
    /// visit's.
    VisitLink,
}

impl ActorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Client => "client",
            Self::Device => "device",
            Self::System => "system",
            Self::VisitLink => "visit-link",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::User, Self::Client, Self::Device, Self::System, Self::VisitLink]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Why data was touched (the HL7 purpose-of-use categories a patient understands).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Treatment,
    Payment,
    Operations,
    Emergency,
    PatientRequest,
    Security,
}

impl Purpose {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Treatment => "treatment",
            Self::Payment => "payment",
            Self::Operations => "operations",
            Self::Emergency => "emergency",
            Self::PatientRequest => "patient_request",
            Self::Security => "security",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Treatment,
            Self::Payment,
            Self::Operations,
            Self::Emergency,
            Self::PatientRequest,
            Self::Security,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// One audited action, as stored and as hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log (0-based); also the Merkle leaf index.
    pub seq: u64,
    /// Unix milliseconds.
    pub at: i64,
    pub tenant_id: String,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    /// The actor's role (`clinician`, ...) or scope for clients.
    pub actor_role: String,
    /// `read`, `search`, `create`, `sign_in`, ...
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub patient_id: String,
    pub purpose: Purpose,
    /// `success`, `denied`, `failed`, ...
    pub outcome: String,
    /// The client's network address.
    pub source: String,
    /// A short label of the session (a prefix of its hash), when there is one.
    pub session: String,
    pub request_id: String,
}

pub(crate) const MAGIC: &[u8] = b"TSAE1";

impl Entry {
    /// The canonical bytes (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical bytes to `out` (the appender writes them straight into a
    /// segment, with no allocation per entry).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut seq = [0u8; 21];
        let mut at = [0u8; 21];
        let parts: [&[u8]; 15] = [
            decimal(u128::from(self.seq), false, &mut seq),
            decimal(u128::from(self.at.unsigned_abs()), self.at < 0, &mut at),
            self.tenant_id.as_bytes(),
            self.actor_kind.as_str().as_bytes(),
            self.actor_id.as_bytes(),
            self.actor_role.as_bytes(),
            self.action.as_bytes(),
            self.resource_type.as_bytes(),
            self.resource_id.as_bytes(),
            self.patient_id.as_bytes(),
            self.purpose.as_str().as_bytes(),
            self.outcome.as_bytes(),
            self.source.as_bytes(),
            self.session.as_bytes(),
            self.request_id.as_bytes(),
        ];
        out.reserve(MAGIC.len() + parts.iter().map(|p| p.len() + 4).sum::<usize>());
        out.extend_from_slice(MAGIC);
        for p in parts {
            let len = u32::try_from(p.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(p);
        }
    }

    /// The length of [`Entry::encode`]'s output, without encoding (the appender sizes a
    /// segment's buffer once with it instead of growing and copying it).
    pub fn encoded_len(&self) -> usize {
        fn digits(n: u128) -> usize {
            n.checked_ilog10().map_or(1, |d| d as usize + 1)
        }
        let numbers = digits(u128::from(self.seq))
            + digits(u128::from(self.at.unsigned_abs()))
            + usize::from(self.at < 0);
        let texts = [
            self.tenant_id.as_str(),
            self.actor_kind.as_str(),
            &self.actor_id,
            &self.actor_role,
            &self.action,
            &self.resource_type,
            &self.resource_id,
            &self.patient_id,
            self.purpose.as_str(),
            &self.outcome,
            &self.source,
            &self.session,
            &self.request_id,
        ]
        .iter()
        .map(|t| t.len())
        .sum::<usize>();
        MAGIC.len() + 15 * 4 + numbers + texts
    }

    /// The RFC 9162 leaf hash of this entry.
    pub fn leaf_hash(&self) -> crate::Hash {
        crate::leaf_hash(&self.encode())
    }
}

/// `n` in decimal, as `to_string` writes it (a `-` when `negative`), in `buf`.
fn decimal(mut n: u128, negative: bool, buf: &mut [u8; 21]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            seq: 7,
            at: 1_790_000_000_000,
            tenant_id: "t".into(),
            actor_kind: ActorKind::User,
            actor_id: "u".into(),
            actor_role: "clinician".into(),
            action: "search".into(),
            resource_type: "Patient".into(),
            resource_id: String::new(),
            patient_id: String::new(),
            purpose: Purpose::Treatment,
            outcome: "success".into(),
            source: "127.0.0.1".into(),
            session: "abcd".into(),
            request_id: "r".into(),
        }
    }

    #[test]
    fn numbers_are_written_as_to_string_writes_them() {
        for n in [0i64, 7, -7, 10, 1_790_000_000_000, i64::MAX, i64::MIN] {
            let mut buf = [0u8; 21];
            let got = decimal(u128::from(n.unsigned_abs()), n < 0, &mut buf);
            assert_eq!(got, n.to_string().as_bytes());
        }
        let mut buf = [0u8; 21];
        assert_eq!(decimal(u128::from(u64::MAX), false, &mut buf), u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        for (seq, at) in [(0, 0), (7, -1), (9, 10), (10, -99), (u64::MAX, i64::MIN), (99, i64::MAX)]
        {
            let mut e = entry();
            (e.seq, e.at) = (seq, at);
            e.actor_id = "0192f3a4-5b6c-7d8e-9f00-112233445566".into();
            assert_eq!(e.encoded_len(), e.encode().len(), "seq {seq}, at {at}");
        }
    }

    #[test]
    fn encoding_is_length_prefixed_and_unambiguous() {
        let e = entry();
        let bytes = e.encode();
        assert!(bytes.starts_with(b"TSAE1\0\0\0\x017\0\0\0\x0d1790000000000"));
        // Moving a character from one field to the next changes the bytes.
        let mut shifted = entry();
        shifted.actor_id = "ut".into();
        shifted.tenant_id = String::new();
        assert_ne!(shifted.encode(), bytes);
        assert_ne!(entry().leaf_hash(), shifted.leaf_hash());
    }
}
