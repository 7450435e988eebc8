//! Email addresses as account identifiers.

use std::fmt;

/// A syntactically plausible, normalised (trimmed, lower-cased) email address.
///
/// Deliberately not a full RFC 5322 parser: an address is proven by delivering a link to
/// it, so the check only rejects what can never be deliverable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("enter an email address such as name@example.org")]
pub struct InvalidEmail;

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let s = raw.trim().to_lowercase();
        let (local, domain) = s.rsplit_once('@').ok_or(InvalidEmail)?;
        let ok = !local.is_empty()
            && local.len() <= 64
            && s.len() <= 254
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok { Ok(Self(s)) } else { Err(InvalidEmail) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_validates() {
        assert_eq!(Email::parse("  Ana@Clinic.Example ").unwrap().as_str(), "ana@clinic.example");
        for bad in ["", "ana", "ana@", "@clinic.example", "ana@clinic", "a b@c.d", "ana@.x"] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }
}
