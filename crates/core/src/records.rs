//! The clinical record: FHIR R4 resources stored encrypted under their patient's data key,
//! with every version kept, and searchable only through blind indexes.
//!
//! A stored row holds ids, version, times and the policy facts needed before decrypting
//! (the category and whether it is restricted); the resource itself is AES-256-GCM
//! ciphertext whose associated data binds tenant, patient, type, id and version, so a
//! ciphertext copied into another row does not decrypt.

pub mod fhir;
pub mod keys;
pub mod normalise;
pub mod reencrypt;
pub mod search;

use std::future::Future;

use telesafe_crypto::keys::{KeyError, SealingKey};

use crate::clock::Timestamp;
use crate::devices::readings::ReadingRef;
use crate::ids::{PatientId, TenantId};
use crate::repo::RepoError;

/// One stored version of a resource.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResource {
    pub tenant: TenantId,
    pub resource_type: String,
    pub id: String,
    pub version: u32,
    /// The patient whose compartment this is in (and whose key sealed it); `None` for
    /// directory resources (Practitioner, Organization, ...).
    pub patient: Option<PatientId>,
    pub last_updated: Timestamp,
    /// A delete is a version without a body.
    pub deleted: bool,
    /// Policy category (`demographics`, `clinical`, `vitals`, `scheduling`, ...).
    pub category: String,
    /// Labelled restricted (confidentiality R or V).
    pub restricted: bool,
    /// The sealed resource; empty for a delete.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for StoredResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredResource")
            .field("resource_type", &self.resource_type)
            .field("id", &self.id)
            .field("version", &self.version)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

/// A version ready to store: the sealed row, its blind-index entries and its sort date.
#[derive(Debug, Clone)]
pub struct PreparedVersion {
    pub row: StoredResource,
    pub index: Vec<IndexEntry>,
    pub sort_date: Option<i64>,
}

/// An index entry of the current version: a blind token, or a date range (Unix ms,
/// inclusive) for date parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEntry {
    Token { param: String, hash: String },
    Date { param: String, low: i64, high: i64 },
}

/// What a search asks the store for; every value already blinded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredSearch {
    pub resource_type: String,
    pub ids: Option<Vec<String>>,
    pub patients: Option<Vec<PatientId>>,
    /// Each entry must match (AND); within an entry any hash (OR).
    pub tokens: Vec<(String, Vec<String>)>,
    /// Each entry must match; within an entry any range condition (OR).
    pub dates: Vec<(String, Vec<search::DateCondition>)>,
    pub last_updated: Vec<search::DateCondition>,
    /// The device readings the `identifier` condition names (values of the form
    /// `[urn:telesafe:device-batch|]<device>/<seq>/<n>`): a device reading's Observation
    /// has no blind identifier entry, its identifier is its place in its batch.
    pub identified_readings: Vec<crate::devices::readings::ReadingRef>,
    /// At most this many hits; the caller asks for one more than it allows to detect
    /// a search that is too broad.
    pub limit: u32,
}

/// A search hit before any decryption: enough to decide access and to sort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub id: String,
    pub version: u32,
    pub patient: Option<PatientId>,
    pub category: String,
    pub restricted: bool,
    pub last_updated: Timestamp,
    /// The resource's main date (Unix ms), for `_sort=date`.
    pub sort_date: Option<i64>,
}

pub trait ResourceRepository: Send + Sync {
    /// Stores `version` as the new current version, replacing the search index with
    /// `index` (empty for a delete). `Conflict` if the current version is not
    /// `version - 1` (a concurrent writer won), `NotFound` if the patient was erased.
    fn put_version(
        &self,
        r: &StoredResource,
        index: &[IndexEntry],
        sort_date: Option<i64>,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// The current version (possibly a delete).
    fn current(
        &self,
        tenant: TenantId,
        resource_type: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<StoredResource>, RepoError>> + Send;
    /// One version.
    fn version(
        &self,
        tenant: TenantId,
        resource_type: &str,
        id: &str,
        version: u32,
    ) -> impl Future<Output = Result<Option<StoredResource>, RepoError>> + Send;
    /// Every version, newest first.
    fn history(
        &self,
        tenant: TenantId,
        resource_type: &str,
        id: &str,
    ) -> impl Future<Output = Result<Vec<StoredResource>, RepoError>> + Send;
    /// Current, not deleted resources matching `q`.
    fn search(
        &self,
        tenant: TenantId,
        q: &StoredSearch,
    ) -> impl Future<Output = Result<Vec<SearchHit>, RepoError>> + Send;
    /// The current versions of these ids (of one type), not deleted.
    fn current_many(
        &self,
        tenant: TenantId,
        resource_type: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<StoredResource>, RepoError>> + Send;
    /// Every version of every resource in the patient's compartment (for re-sealing).
    fn patient_versions(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> impl Future<Output = Result<Vec<StoredResource>, RepoError>> + Send;
    /// Replaces one stored version's sealed body (same row, same plaintext, new key).
    fn reseal(&self, r: &StoredResource) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Every current, not deleted resource in the patient's compartment, but device
    /// readings' Observations (a monitored patient has thousands a day: see
    /// [`Self::patient_readings`]).
    fn compartment(
        &self,
        tenant: TenantId,
        patient: PatientId,
    ) -> impl Future<Output = Result<Vec<StoredResource>, RepoError>> + Send;
    /// The patient's current device readings measured within `window`, newest first
    /// (by time of measurement, then device, sequence number and place in the batch), at
    /// most `limit` of them, grouped by the batch that holds them (each batch once, in
    /// the order of its newest matched reading). With `after`, those that come after that
    /// reading in this order (a page after the one it ended), or `NotFound` if it is no
    /// reading of the patient's. The second value, when more matched than `limit`, is the
    /// last reading given: the `after` of the next page.
    fn patient_readings(
        &self,
        tenant: TenantId,
        patient: PatientId,
        window: TimeWindow,
        limit: u32,
        after: Option<&ReadingRef>,
    ) -> impl Future<Output = Result<(Vec<ReadingBatch>, Option<ReadingRef>), RepoError>> + Send;
}

/// A span of measurement times in Unix ms: `from` inclusive, `to` exclusive; `None` leaves
/// that side open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeWindow {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TimeWindow {
    /// Whether `at` (Unix ms) lies in the window.
    pub fn contains(&self, at: i64) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at < t)
    }
}

/// A stored device batch and which of its readings a query matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingBatch {
    /// The batch's row, named by its reading 0 (body: the sealed batch record).
    pub batch: StoredResource,
    /// The matched readings' indexes in the batch, ascending.
    pub readings: Vec<u32>,
}

/// The associated data that binds a sealed resource to its row.
pub fn resource_aad(
    tenant: TenantId,
    patient: Option<PatientId>,
    resource_type: &str,
    id: &str,
    version: u32,
) -> Vec<u8> {
    let patient = patient.map(|p| p.to_string()).unwrap_or_else(|| "-".to_owned());
    format!("telesafe/resource/v1|{tenant}|{patient}|{resource_type}|{id}|{version}").into_bytes()
}

/// The associated data of a row's body: its resource's, or for version 1 of a device
/// reading's Observation, its batch's (the body is the sealed batch, see
/// [`crate::devices::readings`]).
fn row_aad(r: &StoredResource) -> Vec<u8> {
    if r.version == 1
        && r.resource_type == "Observation"
        && let (Some(patient), Some(reading)) =
            (r.patient, crate::devices::readings::parse_reading_id(&r.id))
    {
        return crate::devices::readings::batch_aad(
            r.tenant,
            patient,
            &reading.device,
            reading.seq,
        );
    }
    resource_aad(r.tenant, r.patient, &r.resource_type, &r.id, r.version)
}

/// Seals a resource's JSON (or a device reading's batch record) for its row.
pub fn seal_resource(
    key: &SealingKey,
    r: &StoredResource,
    json: &[u8],
) -> Result<Vec<u8>, KeyError> {
    key.seal(json, &row_aad(r))
}

/// Opens a row's body: the resource's JSON, or for a device reading's version 1 its
/// batch record (render it with [`crate::devices::readings::BatchRecord::observation`]).
pub fn open_resource(
    key: &SealingKey,
    r: &StoredResource,
) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
    key.open(&r.body, &row_aad(r))
}
