//! Password rules of NIST SP 800-63B rev 4 §3.1.1.2: length is what matters; no
//! composition rules and no forced expiry; Unicode accepted and normalised (NFKC), never
//! truncated; refused when common or breached, or when it contains the account's email
//! or name.

use std::collections::HashSet;
use std::sync::LazyLock;

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

use super::email::Email;
use super::model::DisplayName;

/// Minimum length when the password is the only authenticator.
pub const MIN_SINGLE_FACTOR: usize = 15;
/// Minimum length when the account also has a second factor.
pub const MIN_WITH_MFA: usize = 8;
/// Longest accepted password, in characters after normalisation.
pub const MAX_LENGTH: usize = 128;

/// The shipped blocklist (see the header of `data/common-passwords.txt` for its source),
/// parsed once on first use.
static BLOCKLIST: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
});

/// The blocklist entries, most common first (for tests and tooling).
pub fn blocklist_entries() -> impl Iterator<Item = &'static str> {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
}

/// Why a new password was refused. Messages are written for the person choosing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordProblem {
    #[error("use at least {min} characters; a few unrelated words make a strong password")]
    TooShort { min: usize },
    #[error("use at most {max} characters")]
    TooLong { max: usize },
    #[error("this password is too common; it appears in lists attackers try first")]
    Common,
    #[error("a password must not contain your email address or name")]
    ContainsIdentity,
}

/// Who the password is for, so it can be checked against them.
#[derive(Debug, Clone, Copy)]
pub struct PasswordContext<'a> {
    pub email: &'a Email,
    pub name: &'a DisplayName,
    /// Whether the account has (or is enrolling) a second factor.
    pub has_mfa: bool,
}

/// A password that passed the rules, already normalised: hash this, never the raw input.
#[derive(Debug)]
pub struct AcceptedPassword(SecretString);

impl AcceptedPassword {
    pub fn into_secret(self) -> SecretString {
        self.0
    }
}

/// NFKC normalisation, applied to a password both when it is set and when it is checked,
/// so the same characters typed on different keyboards match.
pub fn normalise(password: &SecretString) -> SecretString {
    SecretString::from(password.expose_secret().nfkc().collect::<String>())
}

/// Checks a new password against the rules.
pub fn check_new(
    password: &SecretString,
    ctx: PasswordContext<'_>,
) -> Result<AcceptedPassword, PasswordProblem> {
    let normalised = normalise(password);
    let text = normalised.expose_secret();
    let length = text.chars().count();
    let min = if ctx.has_mfa { MIN_WITH_MFA } else { MIN_SINGLE_FACTOR };
    if length < min {
        return Err(PasswordProblem::TooShort { min });
    }
    if length > MAX_LENGTH {
        return Err(PasswordProblem::TooLong { max: MAX_LENGTH });
    }
    let lower = text.to_lowercase();
    if BLOCKLIST.contains(lower.as_str()) || BLOCKLIST.contains(lower.trim()) {
        return Err(PasswordProblem::Common);
    }
    if contains_identity(&lower, ctx.email, ctx.name) {
        return Err(PasswordProblem::ContainsIdentity);
    }
    Ok(AcceptedPassword(normalised))
}

fn contains_identity(lower: &str, email: &Email, name: &DisplayName) -> bool {
    let email = email.as_str();
    let local = email.split('@').next().unwrap_or(email);
    let name = name.as_str().to_lowercase();
    let mut needles: Vec<&str> = vec![email, local];
    needles.extend(local.split(['.', '_', '-', '+']));
    needles.push(name.as_str());
    needles.extend(name.split(|c: char| !c.is_alphanumeric()));
    needles.into_iter().filter(|n| n.chars().count() >= 3).any(|n| lower.contains(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(email: &'a Email, name: &'a DisplayName, has_mfa: bool) -> PasswordContext<'a> {
        PasswordContext { email, name, has_mfa }
    }

    fn who() -> (Email, DisplayName) {
        (Email::parse("ana.lopez@example.org").unwrap(), DisplayName::parse("Ana López").unwrap())
    }

    fn check(p: &str, has_mfa: bool) -> Result<(), PasswordProblem> {
        let (e, n) = who();
        check_new(&SecretString::from(p.to_owned()), ctx(&e, &n, has_mfa)).map(|_| ())
    }

    /// `n` characters that are nobody's name and no common password.
    fn of_len(n: usize) -> String {
        "vq7zxw".chars().cycle().take(n).collect()
    }

    #[test]
    fn length_boundaries_with_and_without_mfa() {
        assert_eq!(check(&of_len(7), true), Err(PasswordProblem::TooShort { min: 8 }));
        assert_eq!(check(&of_len(8), true), Ok(()));
        assert_eq!(check(&of_len(14), false), Err(PasswordProblem::TooShort { min: 15 }));
        assert_eq!(check(&of_len(15), false), Ok(()));
        assert_eq!(check(&of_len(8), false), Err(PasswordProblem::TooShort { min: 15 }));
        assert_eq!(check(&of_len(64), false), Ok(()));
        assert_eq!(check(&of_len(128), false), Ok(()));
        assert_eq!(check(&of_len(129), false), Err(PasswordProblem::TooLong { max: 128 }));
        assert_eq!(check(&of_len(129), true), Err(PasswordProblem::TooLong { max: 128 }));
    }

    #[test]
    fn any_unicode_counts_by_character_and_is_never_truncated() {
        // 15 characters, several of them multi-byte emoji, and spaces.
        let p = "🔒🏥 vq 🌧️ zx 🐢🐇 w";
        assert!(p.chars().count() >= 15, "{}", p.chars().count());
        assert_eq!(check(p, false), Ok(()));
        let spaces = "correct  zebra  vq7  pilot";
        assert_eq!(check(spaces, false), Ok(()));
        // 128 emoji are 128 characters (512 bytes) and accepted; the 129th is refused.
        assert_eq!(check(&"🦉".repeat(128), false), Ok(()));
        assert!(check(&"🦉".repeat(129), false).is_err());
        // A long password differing only in its last character is a different password:
        // normalisation never truncates.
        let a = normalise(&SecretString::from(format!("{}a", of_len(127))));
        let b = normalise(&SecretString::from(format!("{}b", of_len(127))));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn nfkc_makes_compatible_forms_equal() {
        let composed = normalise(&SecretString::from("é".to_owned()));
        let decomposed = normalise(&SecretString::from("e\u{301}".to_owned()));
        assert_eq!(composed.expose_secret(), decomposed.expose_secret());
    }

    #[test]
    fn a_thousand_blocklist_entries_are_refused() {
        let entries: Vec<&str> =
            blocklist_entries().filter(|p| p.chars().count() >= 8).take(1000).collect();
        assert_eq!(entries.len(), 1000);
        for p in entries {
            assert_eq!(check(p, true), Err(PasswordProblem::Common), "{p}");
            assert_eq!(check(&p.to_uppercase(), true), Err(PasswordProblem::Common), "{p}");
        }
        assert!(blocklist_entries().count() >= 10_000);
    }

    #[test]
    fn email_and_name_are_refused_inside_a_password() {
        for p in [
            "my ana.lopez@example.org password",
            "ana.lopez is my long password",
            "LOPEZ-forever-and-always-123",
            "lópez forever and always 123",
        ] {
            assert_eq!(check(p, false), Err(PasswordProblem::ContainsIdentity), "{p}");
        }
    }
}
