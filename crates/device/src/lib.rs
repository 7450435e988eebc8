//! The device side of remote patient monitoring: what a blood-pressure cuff, oximeter or
//! glucose meter (or the simulator standing in for one) runs to enrol, sign its readings
//! and deliver them exactly once, buffering on disk while offline.
//!
//! This crate must never depend on the server, its storage or its domain: it links only the
//! wire format (`telesafe-proto`) and crypto (`telesafe-crypto`), so that a third party can
//! build a device from the protocol document alone and this SDK is just one implementation.

pub mod batch;
pub mod device;
pub mod outbox;
pub mod sequence;
pub mod simulate;
pub mod transport;

pub use batch::{BatchError, DeviceIdentity};
pub use device::{Delivery, Device, DeviceError};
pub use outbox::{Outbox, OutboxError};
pub use sequence::{SequenceError, SequenceFile};
pub use transport::{Https, Mqtt, Transport, TransportError};
