//! JSON bodies whose rejections speak the platform's error format.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// `application/json` body, parsed into `T`.
#[derive(Debug, Clone)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(AppError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(_)) => Err(AppError::BadRequest(
                "the JSON body is missing a field or has a wrong type".into(),
            )),
            Err(JsonRejection::JsonSyntaxError(_)) => {
                Err(AppError::BadRequest("the body is not valid JSON".into()))
            }
            Err(JsonRejection::BytesRejection(e)) if e.status() == 413 => {
                Err(AppError::PayloadTooLarge)
            }
            Err(_) => Err(AppError::BadRequest("the body could not be read".into())),
        }
    }
}
