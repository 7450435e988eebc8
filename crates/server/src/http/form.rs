//! Form bodies whose rejections speak the platform's error format (axum's own rejections
//! are plain text).

use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// `application/x-www-form-urlencoded` body, parsed into `T`.
#[derive(Debug, Clone)]
pub struct ValidForm<T>(pub T);

impl<S, T> FromRequest<S> for ValidForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(Self(v)),
            Err(FormRejection::InvalidFormContentType(_)) => Err(AppError::UnsupportedMediaType),
            Err(FormRejection::FailedToDeserializeForm(_))
            | Err(FormRejection::FailedToDeserializeFormBody(_)) => {
                Err(AppError::BadRequest("the form is incomplete or malformed".into()))
            }
            Err(FormRejection::BytesRejection(e)) if e.status() == 413 => {
                Err(AppError::PayloadTooLarge)
            }
            Err(_) => Err(AppError::BadRequest("the form could not be read".into())),
        }
    }
}
