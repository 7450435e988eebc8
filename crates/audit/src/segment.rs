//! Segments: how entries are stored. One group commit writes each tenant's run of
//! consecutive entries as one segment: the entries' canonical encodings, each behind a
//! 4-byte big-endian length, and their leaf hashes (32 bytes each) in the same order.
//!
//! A row per entry with three secondary indexes capped appends near 165k/s; a segment is
//! one row for thousands of entries, and verification hashes the stored bytes as they are
//! (no re-encoding). Searches find segments through a small key index (the patients and
//! actors a segment names); see the store.
//!
//! Hand-written for the same reason as the entry encoding: an auditor must be able to read
//! a segment without our code (`docs/security-model.md`).

use crate::entry::{ActorKind, Entry, MAGIC, Purpose};
use crate::{Hash, leaf_hash};

/// A segment as it is written: the body, the leaf hashes, and what the store indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub first_seq: u64,
    pub count: u32,
    pub tenant_id: String,
    pub min_at: i64,
    pub max_at: i64,
    pub body: Vec<u8>,
    pub leaves: Vec<u8>,
    /// The distinct [`search_key`]s of the patients and actors its entries name, sorted.
    pub keys: Vec<i64>,
}

impl Segment {
    /// Builds the segment of `entries`, which must be consecutive in `seq` and of one
    /// tenant, storing the leaf hashes given (tests forge segments with this).
    pub fn build(entries: &[(Entry, Hash)]) -> Self {
        let tenant = entries.first().map_or("", |(e, _)| e.tenant_id.as_str());
        let mut b = SegmentBuilder::new(entries.first().map_or(0, |(e, _)| e.seq), tenant);
        for (e, h) in entries {
            b.push(e, Some(*h));
        }
        b.finish()
    }

    /// The stored leaf hash of item `i`; all zeroes when the leaves are cut short, so
    /// verification names the entry instead of failing to read.
    pub fn stored_leaf(&self, i: usize) -> Hash {
        self.leaves.get(i * 32..i * 32 + 32).and_then(|s| s.try_into().ok()).unwrap_or([0u8; 32])
    }

    /// The encoded entries, in order. `Err(i)` when item `i` is cut short or the body does
    /// not hold exactly `count` items.
    pub fn items(&self) -> Result<Vec<&[u8]>, usize> {
        match self.split() {
            (items, None) => Ok(items),
            (_, Some(i)) => Err(i),
        }
    }

    /// The items that could be split off the body, and the index at which splitting failed
    /// (an item cut short, or not exactly `count` items). Verification hashes the items it
    /// got before it reports the failure, so a changed length names the entry it belongs to.
    pub fn split(&self) -> (Vec<&[u8]>, Option<usize>) {
        let mut out = Vec::with_capacity(self.count as usize);
        let mut rest = self.body.as_slice();
        while !rest.is_empty() {
            let i = out.len();
            let Some((len, tail)) = rest.split_first_chunk::<4>() else { return (out, Some(i)) };
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                return (out, Some(i));
            }
            let (item, tail) = tail.split_at(len);
            out.push(item);
            rest = tail;
        }
        let n = out.len();
        (out, (n != self.count as usize).then_some(n.min(self.count as usize)))
    }

    /// Decodes every entry with its stored leaf hash (for reads and searches, not for
    /// verification, which hashes the bytes themselves).
    pub fn entries(&self) -> Result<Vec<(Entry, Hash)>, SegmentError> {
        let items = self.items().map_err(|i| SegmentError(self.first_seq + i as u64))?;
        items
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                let e = Entry::decode(bytes).ok_or(SegmentError(self.first_seq + i as u64))?;
                Ok((e, self.stored_leaf(i)))
            })
            .collect()
    }
}

/// The index key of a patient (`kind` `p`) or an actor (`a`) of a tenant: the first 8 bytes
/// of a SHA-256 over them, as a signed integer. Short fixed-size keys keep the index small
/// (twice the appends of text keys, measured); a collision only adds a candidate segment,
/// and every search filters the entries themselves.
pub fn search_key(tenant_id: &str, kind: u8, id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"telesafe audit key\0");
    h.update(tenant_id.as_bytes());
    h.update([0, kind, 0]);
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    i64::from_be_bytes(first)
}

/// Writes one segment, as the appender does: each entry encoded once, straight into the
/// body, and hashed from there.
#[derive(Debug)]
pub struct SegmentBuilder {
    segment: Segment,
    /// The last patient and actor given a key (runs of one are common).
    recent: [String; 2],
}

impl SegmentBuilder {
    /// An empty segment of `tenant_id` whose first entry will be `first_seq`.
    pub fn new(first_seq: u64, tenant_id: &str) -> Self {
        let segment = Segment {
            first_seq,
            count: 0,
            tenant_id: tenant_id.to_owned(),
            min_at: 0,
            max_at: 0,
            body: Vec::new(),
            leaves: Vec::new(),
            keys: Vec::new(),
        };
        Self { segment, recent: Default::default() }
    }

    pub fn tenant_id(&self) -> &str {
        &self.segment.tenant_id
    }

    /// Room for `n` more entries whose encodings take `bytes` in all
    /// ([`Entry::encoded_len`]), so the body is never grown and copied.
    pub fn reserve(&mut self, n: usize, bytes: usize) {
        self.segment.body.reserve(bytes + 4 * n);
        self.segment.leaves.reserve(n * 32);
    }

    /// Appends `e` (the next `seq`, of this tenant) and returns its leaf hash.
    pub fn append(&mut self, e: &Entry) -> Hash {
        self.push(e, None)
    }

    fn push(&mut self, e: &Entry, stored: Option<Hash>) -> Hash {
        let s = &mut self.segment;
        let at = s.body.len();
        s.body.extend_from_slice(&[0; 4]);
        e.encode_into(&mut s.body);
        let len = u32::try_from(s.body.len() - at - 4).unwrap_or(u32::MAX);
        s.body[at..at + 4].copy_from_slice(&len.to_be_bytes());
        let h = leaf_hash(&s.body[at + 4..]);
        s.leaves.extend_from_slice(&stored.unwrap_or(h));
        (s.min_at, s.max_at) =
            if s.count == 0 { (e.at, e.at) } else { (s.min_at.min(e.at), s.max_at.max(e.at)) };
        s.count += 1;
        for (i, (kind, id)) in [(b'p', &e.patient_id), (b'a', &e.actor_id)].into_iter().enumerate()
        {
            if !id.is_empty() && self.recent[i] != *id {
                s.keys.push(search_key(&s.tenant_id, kind, id));
                id.clone_into(&mut self.recent[i]);
            }
        }
        h
    }

    /// The finished segment, its keys sorted and deduplicated.
    pub fn finish(mut self) -> Segment {
        self.segment.keys.sort_unstable();
        self.segment.keys.dedup();
        self.segment
    }
}

/// An entry in a segment that does not parse, by `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored audit entry {0} does not parse")]
pub struct SegmentError(pub u64);

/// An entry's fields borrowed from its encoding, for checks that must not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryView<'a> {
    pub seq: u64,
    pub at: i64,
    pub tenant_id: &'a str,
    pub actor_id: &'a str,
    pub patient_id: &'a str,
}

/// The 15 fields of a canonical encoding; `None` unless it is exactly that.
fn split_fields(bytes: &[u8]) -> Option<[&[u8]; 15]> {
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut fields: [&[u8]; 15] = [&[]; 15];
    for f in &mut fields {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return None;
        }
        (*f, rest) = tail.split_at(len);
    }
    rest.is_empty().then_some(fields)
}

impl<'a> EntryView<'a> {
    /// Parses what verification checks of an encoding (the other fields are covered by the
    /// leaf hash alone); `None` unless it is well formed.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let f = split_fields(bytes)?;
        let text = |b: &'a [u8]| std::str::from_utf8(b).ok();
        Some(Self {
            seq: canonical_u64(f[0])?,
            at: canonical_i64(f[1])?,
            tenant_id: text(f[2])?,
            actor_id: text(f[4])?,
            patient_id: text(f[9])?,
        })
    }
}

/// A number exactly as `to_string` writes it (so decoding and re-encoding is the identity):
/// digits only, no sign, no leading zero.
fn canonical_u64(b: &[u8]) -> Option<u64> {
    let canonical = match b {
        [] => false,
        [b'0'] => true,
        [first, ..] => *first != b'0' && b.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// As [`canonical_u64`], with a leading `-` for negatives (never `-0`).
fn canonical_i64(b: &[u8]) -> Option<i64> {
    match b.strip_prefix(b"-") {
        Some(digits) if digits != b"0" => {
            canonical_u64(digits)?;
            std::str::from_utf8(b).ok()?.parse().ok()
        }
        Some(_) => None,
        None => i64::try_from(canonical_u64(b)?).ok(),
    }
}

impl Entry {
    /// Parses the canonical encoding back into an entry; `None` when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let f = split_fields(bytes)?;
        let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
        Some(Self {
            seq: canonical_u64(f[0])?,
            at: canonical_i64(f[1])?,
            tenant_id: text(f[2])?,
            actor_kind: ActorKind::parse(std::str::from_utf8(f[3]).ok()?)?,
            actor_id: text(f[4])?,
            actor_role: text(f[5])?,
            action: text(f[6])?,
            resource_type: text(f[7])?,
            resource_id: text(f[8])?,
            patient_id: text(f[9])?,
            purpose: Purpose::parse(std::str::from_utf8(f[10]).ok()?)?,
            outcome: text(f[11])?,
            source: text(f[12])?,
            session: text(f[13])?,
            request_id: text(f[14])?,
        })
    }
}

/// Each item's leaf hash and checked fields, on all cores when there are many: this is
/// most of verification's work, and the items are independent.
pub fn examine<'a>(items: &[&'a [u8]]) -> Vec<(Hash, Option<EntryView<'a>>)> {
    let one = |b: &&'a [u8]| (leaf_hash(b), EntryView::parse(b));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || items.len() < 1024 {
        return items.iter().map(one).collect();
    }
    let per = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(per)
            .map(|part| (part, scope.spawn(move || part.iter().map(one).collect::<Vec<_>>())))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (part, handle) in parts {
            // A worker that died is redone here: every entry is always checked.
            out.extend(handle.join().unwrap_or_else(|_| part.iter().map(one).collect()));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, patient: &str) -> (Entry, Hash) {
        let e = Entry {
            seq,
            at: 1_790_000_000_000 + seq as i64,
            tenant_id: "t1".into(),
            actor_kind: ActorKind::VisitLink,
            actor_id: "u1".into(),
            actor_role: "clinician".into(),
            action: "read".into(),
            resource_type: "Observation".into(),
            resource_id: format!("o{seq}"),
            patient_id: patient.into(),
            purpose: Purpose::PatientRequest,
            outcome: "success".into(),
            source: "::1".into(),
            session: String::new(),
            request_id: "r".into(),
        };
        let h = e.leaf_hash();
        (e, h)
    }

    #[test]
    fn a_segment_decodes_to_its_entries_and_indexes_patients_and_actors() {
        let rows = vec![entry(5, "p1"), entry(6, ""), entry(7, "p1"), entry(8, "p2")];
        let s = Segment::build(&rows);
        assert_eq!((s.first_seq, s.count, s.tenant_id.as_str()), (5, 4, "t1"));
        assert_eq!((s.min_at, s.max_at), (1_790_000_000_005, 1_790_000_000_008));
        let mut keys = vec![
            search_key("t1", b'a', "u1"),
            search_key("t1", b'p', "p1"),
            search_key("t1", b'p', "p2"),
        ];
        keys.sort_unstable();
        assert_eq!(s.keys, keys);
        assert_ne!(search_key("t1", b'p', "u1"), search_key("t1", b'a', "u1"));
        assert_ne!(search_key("t1", b'p', "p1"), search_key("t2", b'p', "p1"));
        assert_eq!(s.entries().unwrap(), rows);
        let facts = examine(&s.items().unwrap());
        assert_eq!(
            facts.iter().map(|f| f.0).collect::<Vec<_>>(),
            rows.iter().map(|(_, h)| *h).collect::<Vec<_>>()
        );
        let view = facts[3].1.unwrap();
        assert_eq!(
            (view.seq, view.tenant_id, view.patient_id, view.actor_id),
            (8, "t1", "p2", "u1")
        );
    }

    #[test]
    fn the_appender_writes_the_same_segment_as_build() {
        let rows =
            vec![entry(5, "p1"), entry(6, ""), entry(7, "p1"), entry(8, "p2"), entry(9, "p1")];
        let mut b = SegmentBuilder::new(5, "t1");
        let hashes: Vec<Hash> = rows.iter().map(|(e, _)| b.append(e)).collect();
        assert_eq!(b.finish(), Segment::build(&rows));
        assert_eq!(hashes, rows.iter().map(|(_, h)| *h).collect::<Vec<_>>());
    }

    #[test]
    fn a_damaged_body_names_the_entry() {
        let s = Segment::build(&[entry(5, "p1"), entry(6, "p1"), entry(7, "p1")]);
        let mut cut = s.clone();
        cut.body.truncate(cut.body.len() - 3);
        assert_eq!(cut.items(), Err(2));
        let mut short = s.clone();
        short.count = 4;
        assert_eq!(short.items().err(), Some(3));
        let mut garbled = s.clone();
        let at = garbled.body.len() - 40;
        garbled.body[at] = 0xff; // not UTF-8 any more
        assert_eq!(garbled.entries(), Err(SegmentError(7)));
        // A number written differently is not the canonical encoding.
        let (e, _) = entry(1, "p");
        let odd = e.encode();
        let mut padded = odd.clone();
        padded.splice(5..10, [0, 0, 0, 2, b'0', b'1']);
        assert!(Entry::decode(&odd).is_some());
        assert!(Entry::decode(&padded).is_none());
        for (text, ok) in [
            ("0", true),
            ("-5", true),
            ("17", true),
            ("-0", false),
            ("+5", false),
            ("", false),
            ("05", false),
            ("-", false),
        ] {
            assert_eq!(canonical_i64(text.as_bytes()).is_some(), ok, "{text}");
        }
        assert_eq!(canonical_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(canonical_u64(b"18446744073709551616"), None);
    }
}
