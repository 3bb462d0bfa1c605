//! The one place where errors become HTTP answers. Internal failures are logged here and
//! answered with a generic `internal` error: no internal text reaches a client.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use grove_wire::{ApiError, ErrorCode};

/// An error answer.
#[derive(Debug)]
pub struct AppError(pub ApiError);

impl AppError {
    /// An error with a code and a human message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppError(ApiError::new(code, message))
    }

    /// `wrong_epoch` with the room's current epoch and head.
    pub fn wrong_epoch(current_epoch: u64, head: u64, yours: u64) -> Self {
        let mut e = ApiError::new(
            ErrorCode::WrongEpoch,
            format!("the room is at epoch {current_epoch} (head {head}), not {yours}: read the log, apply the entries you miss and retry"),
        );
        e.current_epoch = Some(current_epoch);
        e.head = Some(head);
        AppError(e)
    }

    /// A failure of ours: logged with its detail, answered without it.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "{context}");
        AppError::new(ErrorCode::Internal, "internal server error; the operator's log has the details")
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.0.code
    }
}

impl From<grove_store::StoreError> for AppError {
    fn from(e: grove_store::StoreError) -> Self {
        match e {
            grove_store::StoreError::Unavailable { .. } => {
                tracing::warn!(detail = %with_sources(&e), "storage unavailable");
                AppError::new(ErrorCode::Unavailable, "storage is unavailable; retry shortly")
            }
            // Logged once per episode by `storage`, not per request.
            grove_store::StoreError::Full { .. } => crate::storage::store_full(),
            other => AppError::internal("storage failure", with_sources(&other)),
        }
    }
}

/// An error and every error under it, for the operator's log: "a: b: c".
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        // Errors that print their source already (mls-rs', ours with the cause in the text).
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry = self.0.retry_after;
        let store_full = self.0.code == ErrorCode::StorageFull && self.0.message == crate::storage::FULL_MESSAGE;
        let mut resp = (status, Json(self.0)).into_response();
        if store_full {
            resp.extensions_mut().insert(crate::storage::StoreFullAnswer);
        }
        if let Some(secs) = retry {
            resp.headers_mut().insert("retry-after", HeaderValue::from(secs));
        }
        resp
    }
}

/// Result alias for handlers.
pub(crate) type AppResult<T> = Result<T, AppError>;
