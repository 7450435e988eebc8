//! Step-up: sensitive actions (user administration, record export, break-glass, key
//! operations) need a second factor verified within the last five minutes.

use std::time::Duration;

use super::session::Session;
use crate::clock::Timestamp;

/// How recent the last second-factor check must be.
pub const STEP_UP_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Whether `session` verified a second factor recently enough at `now`.
pub fn is_fresh(session: &Session, now: Timestamp) -> bool {
    session.mfa_at.is_some_and(|at| now.since(at) < STEP_UP_WINDOW && at <= now)
}
