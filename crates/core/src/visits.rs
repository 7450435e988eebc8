//! Video visits: an appointment's call, its one-time link, the waiting room, admission and
//! the identity check.
//!
//! A visit belongs to one patient and one or more clinicians. The patient joins through a
//! link that opens shortly before the appointment and closes after it, and proves who they
//! are with their date of birth (or by being signed in). They then wait until a clinician of
//! the visit admits them: nobody is ever admitted automatically. Admission belongs to the
//! patient's pass (or account), so a patient whose connection drops comes back without
//! being admitted again; a second browser joining with the same link replaces the first and
//! must be admitted anew, so a forwarded link cannot slip a stranger into the call.
//!
//! Only ids and times are kept here; what was said and noted lives in the encrypted record
//! (Appointment, Encounter, Communication, DocumentReference).

use std::future::Future;
use std::time::Duration;

use telesafe_crypto::TokenHash;

use crate::{PatientId, RepoError, TenantId, Timestamp, UserId, VisitId};

/// The link opens this long before the appointment starts.
pub const OPENS_BEFORE: Duration = Duration::from_secs(30 * 60);
/// The link stays open this long after the appointment's scheduled end.
pub const CLOSES_AFTER: Duration = Duration::from_secs(60 * 60);
/// Wrong dates of birth on one link before it locks.
pub const MAX_LINK_FAILURES: u32 = 5;
/// How long a locked link stays locked.
pub const LINK_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// A participant counts as present while its socket reported within this time.
pub const PRESENCE_TTL: Duration = Duration::from_secs(45);
/// The shortest and longest appointment.
pub const MIN_LENGTH: Duration = Duration::from_secs(5 * 60);
pub const MAX_LENGTH: Duration = Duration::from_secs(4 * 3600);
/// At most this many clinicians on one visit.
pub const MAX_CLINICIANS: usize = 8;

/// Where a visit is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitStatus {
    /// Scheduled; nobody admitted yet.
    Booked,
    /// The patient has been admitted at least once.
    InProgress,
    /// Ended by a clinician.
    Finished,
    Cancelled,
}

impl VisitStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Booked => "booked",
            Self::InProgress => "in-progress",
            Self::Finished => "finished",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Booked, Self::InProgress, Self::Finished, Self::Cancelled]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    /// Whether the visit can still be joined.
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Booked | Self::InProgress)
    }
}

/// How the clinician confirmed who the patient is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityMethod {
    /// A photo identity document shown on camera.
    PhotoId,
    /// The clinician knows the patient.
    Known,
    /// The patient joined signed in with a second factor.
    Mfa,
    /// Something else, described in a note.
    Other,
}

impl IdentityMethod {
    pub const ALL: [Self; 4] = [Self::PhotoId, Self::Known, Self::Mfa, Self::Other];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PhotoId => "photo-id",
            Self::Known => "known",
            Self::Mfa => "mfa",
            Self::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// In plain words, for pages.
    pub const fn label(self) -> &'static str {
        match self {
            Self::PhotoId => "photo ID shown on camera",
            Self::Known => "known to the clinician",
            Self::Mfa => "signed in with two-step sign-in",
            Self::Other => "other (see note)",
        }
    }
}

/// Whether the patient is in the waiting room, in the call, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientState {
    Absent,
    Waiting,
    Admitted,
}

impl PatientState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Waiting => "waiting",
            Self::Admitted => "admitted",
        }
    }
}

/// One video visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    pub id: VisitId,
    pub tenant: TenantId,
    pub patient: PatientId,
    pub clinicians: Vec<UserId>,
    /// The FHIR Appointment that describes it (sealed in the patient's record).
    pub appointment_id: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub status: VisitStatus,
    /// The hash of the visit link's secret.
    pub link_hash: TokenHash,
    pub link_failures: u32,
    pub link_locked_until: Option<Timestamp>,
    /// The participant key (see [`VisitPass::participant_key`]) last seen in the waiting
    /// room or the call, and when.
    pub present_key: Option<String>,
    pub present_at: Option<Timestamp>,
    /// The participant key a clinician admitted.
    pub admitted_key: Option<String>,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub identity_method: Option<IdentityMethod>,
    /// The FHIR Encounter, from the first admission on.
    pub encounter_id: Option<String>,
    /// The clinician's notes (a FHIR DocumentReference), once written.
    pub note_id: Option<String>,
    pub created_by: UserId,
    pub created_at: Timestamp,
}

/// Why a visit link does not work now. The messages are for the patient: plain words, no
/// detail about the visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefusal {
    #[error("this visit link opens 30 minutes before your appointment; please come back then")]
    NotYet,
    #[error("this visit link has expired; please contact your clinic for a new appointment")]
    Closed,
    #[error("this visit is over or was cancelled")]
    Over,
    #[error(
        "too many wrong answers: this link is locked for 15 minutes; please try later or call your clinic"
    )]
    Locked,
}

/// What is wrong with a visit being scheduled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("a visit needs at least one clinician")]
    NoClinician,
    #[error("a visit may have at most {MAX_CLINICIANS} clinicians")]
    TooManyClinicians,
    #[error("a visit lasts between 5 minutes and 4 hours")]
    Length,
    #[error("the visit would have ended already")]
    InThePast,
}

impl Visit {
    /// A newly booked visit from `starts` to `ends` (a new id, nothing happened yet). Its
    /// Appointment id is filled in once the Appointment is written.
    pub fn booked(
        tenant: TenantId,
        patient: PatientId,
        clinicians: Vec<UserId>,
        (starts, ends): (Timestamp, Timestamp),
        link_hash: TokenHash,
        created_by: UserId,
        now: Timestamp,
    ) -> Self {
        Self {
            id: VisitId::new_v7(),
            tenant,
            patient,
            clinicians,
            appointment_id: String::new(),
            starts_at: starts,
            ends_at: ends,
            status: VisitStatus::Booked,
            link_hash,
            link_failures: 0,
            link_locked_until: None,
            present_key: None,
            present_at: None,
            admitted_key: None,
            started_at: None,
            ended_at: None,
            identity_method: None,
            encounter_id: None,
            note_id: None,
            created_by,
            created_at: now,
        }
    }

    /// When the link works: from [`OPENS_BEFORE`] the start to [`CLOSES_AFTER`] the end.
    pub fn window(&self) -> (Timestamp, Timestamp) {
        window(self.starts_at, self.ends_at)
    }

    /// Whether the link may be used at `now`.
    pub fn link_usable(&self, now: Timestamp) -> Result<(), LinkRefusal> {
        if !self.status.is_open() {
            return Err(LinkRefusal::Over);
        }
        let (opens, closes) = self.window();
        if now < opens {
            return Err(LinkRefusal::NotYet);
        }
        if now >= closes {
            return Err(LinkRefusal::Closed);
        }
        if self.link_locked_until.is_some_and(|until| now < until) {
            return Err(LinkRefusal::Locked);
        }
        Ok(())
    }

    /// Whether a socket may be opened at `now` (the same window; admitted participants may
    /// stay until the window closes even if the visit runs long).
    pub fn joinable(&self, now: Timestamp) -> bool {
        let (opens, closes) = self.window();
        self.status.is_open() && now >= opens && now < closes
    }

    pub fn is_clinician(&self, user: UserId) -> bool {
        self.clinicians.contains(&user)
    }

    /// Whether `key` is the participant a clinician admitted.
    pub fn is_admitted(&self, key: &str) -> bool {
        self.admitted_key.as_deref() == Some(key)
    }

    /// The waiting room as a clinician sees it at `now`.
    pub fn patient_state(&self, now: Timestamp) -> PatientState {
        let present = self.present_at.is_some_and(|at| now.since(at) < PRESENCE_TTL);
        match (&self.present_key, present) {
            (Some(k), true) if self.is_admitted(k) => PatientState::Admitted,
            (Some(_), true) => PatientState::Waiting,
            _ => PatientState::Absent,
        }
    }
}

/// The link window of an appointment from `starts` to `ends`.
pub fn window(starts: Timestamp, ends: Timestamp) -> (Timestamp, Timestamp) {
    let opens = Timestamp::from_unix_millis(
        starts.unix_millis() - i64::try_from(OPENS_BEFORE.as_millis()).unwrap_or(0),
    );
    (opens, ends.plus(CLOSES_AFTER))
}

/// Checks a visit being scheduled.
pub fn check_schedule(
    starts: Timestamp,
    length: Duration,
    clinicians: &[UserId],
    now: Timestamp,
) -> Result<(), ScheduleError> {
    if clinicians.is_empty() {
        return Err(ScheduleError::NoClinician);
    }
    if clinicians.len() > MAX_CLINICIANS {
        return Err(ScheduleError::TooManyClinicians);
    }
    if length < MIN_LENGTH || length > MAX_LENGTH {
        return Err(ScheduleError::Length);
    }
    if starts.plus(length) <= now {
        return Err(ScheduleError::InThePast);
    }
    Ok(())
}

/// What a patient holds after confirming their date of birth on the link: a cookie whose
/// hash is stored here, valid until the link window closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitPass {
    pub hash: TokenHash,
    pub tenant: TenantId,
    pub visit: VisitId,
    pub patient: PatientId,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl VisitPass {
    /// The participant this pass stands for (a prefix of its hash: enough to tell passes
    /// apart, useless as a credential).
    pub fn participant_key(&self) -> String {
        format!("pass:{}", self.hash.as_str().chars().take(16).collect::<String>())
    }
}

/// The participant key of a patient signed in to the portal.
pub fn account_key(user: UserId) -> String {
    format!("user:{user}")
}

pub trait VisitRepository: Send + Sync {
    fn create_visit(&self, v: &Visit) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn visit(
        &self,
        tenant: TenantId,
        id: VisitId,
    ) -> impl Future<Output = Result<Option<Visit>, RepoError>> + Send;
    /// The visit a link belongs to, across tenants (the link is all a patient has).
    fn visit_by_link(
        &self,
        link: &TokenHash,
    ) -> impl Future<Output = Result<Option<Visit>, RepoError>> + Send;
    /// Visits starting in `[from, to)`, earliest first.
    fn visits_between(
        &self,
        tenant: TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Future<Output = Result<Vec<Visit>, RepoError>> + Send;
    /// Claims one answer on the link before it is checked: counted at once (atomically),
    /// and refused (false) while the link is locked or [`MAX_LINK_FAILURES`] answers are
    /// counted, so parallel guesses cannot outrun the lockout.
    fn claim_link_attempt(
        &self,
        tenant: TenantId,
        id: VisitId,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
    /// After a wrong answer: at [`MAX_LINK_FAILURES`] counted answers the link locks until
    /// `now + LINK_LOCKOUT` and the count starts again. Returns the answers counted
    /// ([`MAX_LINK_FAILURES`] when it locked).
    fn link_failed(
        &self,
        tenant: TenantId,
        id: VisitId,
        now: Timestamp,
    ) -> impl Future<Output = Result<u32, RepoError>> + Send;
    /// Issues a pass after a right answer: the link's failures are reset and every earlier
    /// pass of the visit stops working.
    fn issue_pass(&self, pass: &VisitPass) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// A pass that has not expired at `now`, across tenants.
    fn visit_pass(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<VisitPass>, RepoError>> + Send;
    /// Records that the patient participant `key` is present (`Some(now)`) or has left
    /// (`None`; only if `key` is the one recorded).
    fn set_presence(
        &self,
        tenant: TenantId,
        id: VisitId,
        key: &str,
        at: Option<Timestamp>,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Admits participant `key`; the first admission starts the visit and names its
    /// Encounter.
    fn admit(
        &self,
        tenant: TenantId,
        id: VisitId,
        key: &str,
        encounter_id: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn set_identity_method(
        &self,
        tenant: TenantId,
        id: VisitId,
        method: IdentityMethod,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    fn set_note(
        &self,
        tenant: TenantId,
        id: VisitId,
        note_id: &str,
    ) -> impl Future<Output = Result<(), RepoError>> + Send;
    /// Ends an open visit (status finished, or cancelled when nobody was ever admitted).
    /// Returns false when it was already over.
    fn end_visit(
        &self,
        tenant: TenantId,
        id: VisitId,
        status: VisitStatus,
        now: Timestamp,
    ) -> impl Future<Output = Result<bool, RepoError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visit(starts: i64, ends: i64) -> Visit {
        Visit::booked(
            TenantId::new_v7(),
            PatientId::new_v7(),
            vec![UserId::new_v7()],
            (Timestamp::from_unix_millis(starts), Timestamp::from_unix_millis(ends)),
            TokenHash::from_stored("00".into()),
            UserId::new_v7(),
            Timestamp::from_unix_millis(0),
        )
    }

    const MIN: i64 = 60_000;

    #[test]
    fn the_link_works_only_inside_its_window_and_while_unlocked() {
        let start = 1_000 * MIN;
        let mut v = visit(start, start + 20 * MIN);
        let at = |m: i64| Timestamp::from_unix_millis(start + m * MIN);
        assert_eq!(v.link_usable(at(-31)), Err(LinkRefusal::NotYet));
        assert_eq!(v.link_usable(at(-30)), Ok(()));
        assert_eq!(v.link_usable(at(79)), Ok(()));
        assert_eq!(v.link_usable(at(80)), Err(LinkRefusal::Closed));
        v.link_locked_until = Some(at(10));
        assert_eq!(v.link_usable(at(5)), Err(LinkRefusal::Locked));
        assert_eq!(v.link_usable(at(10)), Ok(()));
        v.status = VisitStatus::Finished;
        assert_eq!(v.link_usable(at(11)), Err(LinkRefusal::Over));
    }

    #[test]
    fn the_waiting_room_shows_presence_and_admission() {
        let mut v = visit(0, 20 * MIN);
        let now = Timestamp::from_unix_millis(5 * MIN);
        assert_eq!(v.patient_state(now), PatientState::Absent);
        v.present_key = Some("pass:abc".into());
        v.present_at = Some(now);
        assert_eq!(v.patient_state(now), PatientState::Waiting);
        v.admitted_key = Some("pass:abc".into());
        assert_eq!(v.patient_state(now), PatientState::Admitted);
        // A new browser with the same link is a new participant: waiting again.
        v.present_key = Some("pass:def".into());
        assert_eq!(v.patient_state(now), PatientState::Waiting);
        // Gone quiet for longer than the presence TTL: absent.
        assert_eq!(v.patient_state(now.plus(PRESENCE_TTL)), PatientState::Absent);
    }

    #[test]
    fn schedules_are_checked() {
        let now = Timestamp::from_unix_millis(100 * MIN);
        let c = [UserId::new_v7()];
        let ok = Duration::from_secs(15 * 60);
        assert_eq!(check_schedule(now, ok, &c, now), Ok(()));
        assert_eq!(check_schedule(now, ok, &[], now), Err(ScheduleError::NoClinician));
        assert_eq!(
            check_schedule(now, Duration::from_secs(60), &c, now),
            Err(ScheduleError::Length)
        );
        let past = Timestamp::from_unix_millis(50 * MIN);
        assert_eq!(check_schedule(past, ok, &c, now), Err(ScheduleError::InThePast));
        for m in IdentityMethod::ALL {
            assert_eq!(IdentityMethod::parse(m.as_str()), Some(m));
        }
    }
}
