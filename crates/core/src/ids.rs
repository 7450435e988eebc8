//! Newtype ids, parsed at the edge so that a raw string never reaches the domain.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// An id that could not be parsed. Carries no copy of the input: ids arrive in URLs and a
/// malformed one must not be echoed into logs or error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} id")]
pub struct MalformedId {
    pub kind: &'static str,
}

macro_rules! uuid_id {
    ($(#[$m:meta])* $name:ident, $kind:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered (UUIDv7) id, so inserts stay index-friendly.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            pub const fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }

            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = MalformedId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::try_parse(s).map(Self).map_err(|_| MalformedId { kind: $kind })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(
    /// A tenant: one clinic or health-system organisation, isolated from every other.
    TenantId,
    "tenant"
);
uuid_id!(
    /// A user account (staff or patient) within one tenant.
    UserId,
    "user"
);
uuid_id!(
    /// A patient within one tenant.
    PatientId,
    "patient"
);
uuid_id!(
    /// A video visit (one appointment's call, waiting room and link).
    VisitId,
    "visit"
);
uuid_id!(
    /// A registered passkey (WebAuthn credential) of one account.
    PasskeyId,
    "passkey"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_garbage_without_echoing_it() {
        let id = TenantId::new_v7();
        assert_eq!(id.to_string().parse::<TenantId>().unwrap(), id);
        let err = "Jane Doe 1970-01-01".parse::<PatientId>().unwrap_err();
        assert_eq!(err.to_string(), "malformed patient id");
    }
}
