//! Telesafe's domain: one module per capability (`identity` first; `access`, `records`,
//! `visits`, `messaging`, `devices`, `detection`, `incidents` and `compliance` follow), each
//! with its types, its rules and the repository traits that storage implements.
//!
//! This crate must never speak HTTP or SQL, read the wall clock except through [`clock`], or
//! accept an unparsed string where a checked type exists: ids, slugs and emails are parsed
//! at the edge into the newtypes defined here.

pub mod access;
pub mod audit;
pub mod clock;
pub mod devices;
pub mod identity;
pub mod ids;
pub mod records;
pub mod repo;
pub mod visits;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use ids::{PasskeyId, PatientId, TenantId, UserId, VisitId};
pub use repo::RepoError;
