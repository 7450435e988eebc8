//! Wire types that cross a process boundary: the platform API's error body and its stable
//! error codes, and the signed-telemetry format shared with devices.
//!
//! This crate must never depend on anything that knows about storage, HTTP frameworks or
//! keys: a device SDK or a third-party client links it, so it stays small and pure.

pub mod error;
pub mod telemetry;

pub use error::{ErrorBody, ErrorCode};
