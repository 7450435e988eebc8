//! Normalising values before they are blinded, so that a search finds what a person means:
//! names ignore case, accents and spacing; phone numbers keep only digits (and a leading
//! plus); emails ignore case. Codes and identifiers are compared exactly, as FHIR says.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Case-, accent- and whitespace-insensitive text: "  José  DE la Cruz" → "jose de la cruz".
pub fn text(s: &str) -> String {
    let folded: String =
        s.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The words of a name part, each normalised ("Lopez-Garcia" → ["lopez", "garcia"]).
pub fn words(s: &str) -> Vec<String> {
    text(s)
        .split(|c: char| c.is_whitespace() || c == '-' || c == '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Digits only: "+1 (555) 010-0199" → "15550100199", so a number matches with or without
/// its plus sign, spaces or punctuation.
pub fn phone(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Trimmed and lower-cased.
pub fn email(s: &str) -> String {
    s.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_case_accents_and_spacing() {
        assert_eq!(text("  José  DE la Cruz "), "jose de la cruz");
        assert_eq!(text("ANA LÓPEZ"), text("ana lopez"));
        assert_eq!(words("López-García"), vec!["lopez", "garcia"]);
        assert_eq!(text("Ｗalter"), "walter");
    }

    #[test]
    fn phones_and_emails() {
        assert_eq!(phone("+1 (555) 010-0199"), "15550100199");
        assert_eq!(phone("555.010.0199"), "5550100199");
        assert_eq!(email(" Ana@Example.TEST "), "ana@example.test");
    }
}
