//! The error every repository returns.

/// Storage failures as the domain sees them. `Backend` carries text for the log only; it
/// is never shown to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RepoError {
    /// A uniqueness rule was violated (for example a second account with the same email).
    #[error("the record conflicts with an existing one")]
    Conflict,
    /// The record does not exist, or is not visible to the caller's tenant.
    #[error("not found")]
    NotFound,
    /// The database failed; the detail is for operators.
    #[error("storage failure: {0}")]
    Backend(String),
}
