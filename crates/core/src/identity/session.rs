//! Server-side sessions with idle and absolute timeouts.

use std::time::Duration;

use telesafe_crypto::TokenHash;

use super::model::Role;
use crate::clock::Timestamp;
use crate::ids::{TenantId, UserId};

/// How far a session has got through sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStage {
    /// Fully signed in.
    Full,
    /// Password accepted; the second factor is still to come.
    MfaPending,
    /// Password accepted, but this (staff) account must enrol a second factor before it
    /// can do anything else.
    EnrollRequired,
}

impl SessionStage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::MfaPending => "mfa_pending",
            Self::EnrollRequired => "enroll_required",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Full, Self::MfaPending, Self::EnrollRequired].into_iter().find(|x| x.as_str() == s)
    }
}

/// A signed-in browser. The cookie holds a random token; only its hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    pub stage: SessionStage,
    /// When a second factor was last verified in this session (for step-up).
    pub mfa_at: Option<Timestamp>,
    pub token_hash: TokenHash,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
    pub created_at: Timestamp,
    pub last_seen_at: Timestamp,
    /// The synchronizer token every state-changing form of this session must carry.
    pub csrf_token: String,
    /// The client address at sign-in.
    pub source: String,
    /// A short description of the browser (from its User-Agent), for the sessions page.
    pub user_agent: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("stage", &self.stage)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .finish_non_exhaustive()
    }
}

/// How long sessions live. Defaults follow NIST SP 800-63B rev 4 §2.2.3 (AAL2):
/// reauthentication after 30 minutes of inactivity and at least every 12 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self { idle: Duration::from_secs(30 * 60), absolute: Duration::from_secs(12 * 3600) }
    }
}

/// A tenant's own, shorter session limits (unset: the defaults for each role).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantSessionLimits {
    pub idle: Option<Duration>,
    pub absolute: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("the idle limit must be a whole number of minutes from 1 to 30")]
    Idle,
    #[error("the overall limit must be a whole number of hours from 1 to 12")]
    Absolute,
}

impl TenantSessionLimits {
    /// From an administrator's form: minutes idle and hours overall, blank for the default.
    /// Longer than the defaults is refused, not silently capped.
    pub fn parse(idle_minutes: &str, absolute_hours: &str) -> Result<Self, LimitsError> {
        let field = |s: &str, max: u64, err: LimitsError| -> Result<Option<u64>, LimitsError> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            match s.parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
                _ => Err(err),
            }
        };
        let defaults = SessionPolicy::default();
        Ok(Self {
            idle: field(idle_minutes, defaults.idle.as_secs() / 60, LimitsError::Idle)?
                .map(|m| Duration::from_secs(m * 60)),
            absolute: field(
                absolute_hours,
                defaults.absolute.as_secs() / 3600,
                LimitsError::Absolute,
            )?
            .map(|h| Duration::from_secs(h * 3600)),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Live,
    IdleExpired,
    AbsoluteExpired,
}

impl SessionPolicy {
    /// The limits for `role`: administrators, security officers and platform operators hold
    /// the keys to everyone else's access, so their idle limit is 15 minutes.
    pub fn for_role(role: Role) -> Self {
        match role {
            Role::TenantAdmin | Role::SecurityOfficer | Role::PlatformOperator => {
                Self { idle: Duration::from_secs(15 * 60), ..Self::default() }
            }
            _ => Self::default(),
        }
    }

    /// These limits, shortened by a tenant's own (a tenant may shorten, never lengthen).
    pub fn within(self, tenant: TenantSessionLimits) -> Self {
        Self {
            idle: tenant.idle.map_or(self.idle, |t| t.min(self.idle)),
            absolute: tenant.absolute.map_or(self.absolute, |t| t.min(self.absolute)),
        }
    }

    /// A session is over once the idle or absolute limit has been reached (not exceeded):
    /// at exactly 30:00 of inactivity it has ended.
    pub fn state(&self, s: &Session, now: Timestamp) -> SessionState {
        if now.since(s.created_at) >= self.absolute {
            SessionState::AbsoluteExpired
        } else if now.since(s.last_seen_at) >= self.idle {
            SessionState::IdleExpired
        } else {
            SessionState::Live
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_may_shorten_never_lengthen() {
        let parse = TenantSessionLimits::parse;
        assert_eq!(parse("", " ").unwrap(), TenantSessionLimits::default());
        let l = parse("10", "8").unwrap();
        let admin = SessionPolicy::for_role(Role::TenantAdmin).within(l);
        assert_eq!((admin.idle.as_secs(), admin.absolute.as_secs()), (600, 8 * 3600));
        // A tenant idle limit above an admin's 15 minutes leaves the admin's in force.
        let l = parse("20", "").unwrap();
        assert_eq!(SessionPolicy::for_role(Role::TenantAdmin).within(l).idle.as_secs(), 900);
        assert_eq!(SessionPolicy::for_role(Role::Nurse).within(l).idle.as_secs(), 1200);
        assert_eq!(parse("31", ""), Err(LimitsError::Idle));
        assert_eq!(parse("0", ""), Err(LimitsError::Idle));
        assert_eq!(parse("ten", ""), Err(LimitsError::Idle));
        assert_eq!(parse("", "13"), Err(LimitsError::Absolute));
        assert_eq!(parse("30", "12").unwrap().absolute, Some(Duration::from_secs(12 * 3600)));
    }

    fn session_at(t: Timestamp) -> Session {
        Session {
            token_hash: TokenHash::from_stored("00".repeat(32)),
            tenant_id: TenantId::new_v7(),
            user_id: UserId::new_v7(),
            role: Role::Clinician,
            created_at: t,
            last_seen_at: t,
            csrf_token: String::new(),
            source: String::new(),
            user_agent: String::new(),
            stage: SessionStage::Full,
            mfa_at: None,
        }
    }

    #[test]
    fn administrators_idle_out_after_fifteen_minutes() {
        let t0 = Timestamp::from_unix_millis(10_000_000);
        let s = session_at(t0);
        let at = t0.plus(Duration::from_secs(15 * 60));
        assert_eq!(
            SessionPolicy::for_role(Role::TenantAdmin).state(&s, at),
            SessionState::IdleExpired
        );
        assert_eq!(
            SessionPolicy::for_role(Role::SecurityOfficer).state(&s, at),
            SessionState::IdleExpired
        );
        assert_eq!(SessionPolicy::for_role(Role::Clinician).state(&s, at), SessionState::Live);
        assert_eq!(SessionPolicy::for_role(Role::Patient).state(&s, at), SessionState::Live);
    }

    #[test]
    fn idle_limit_is_inclusive_at_thirty_minutes() {
        let p = SessionPolicy::default();
        let t0 = Timestamp::from_unix_millis(10_000_000);
        let s = session_at(t0);
        assert_eq!(p.state(&s, t0.plus(Duration::from_secs(29 * 60 + 59))), SessionState::Live);
        assert_eq!(p.state(&s, t0.plus(Duration::from_secs(30 * 60))), SessionState::IdleExpired);
    }

    #[test]
    fn absolute_limit_holds_despite_activity() {
        let p = SessionPolicy::default();
        let t0 = Timestamp::from_unix_millis(10_000_000);
        let mut s = session_at(t0);
        let end = t0.plus(Duration::from_secs(12 * 3600));
        s.last_seen_at = end.plus(Duration::from_secs(0)); // active right now
        assert_eq!(p.state(&s, t0.plus(Duration::from_secs(12 * 3600 - 1))), SessionState::Live);
        assert_eq!(p.state(&s, end), SessionState::AbsoluteExpired);
    }
}
