//! `GET /v1/batches/{batch_id}`: an upload's status, as folded from the agents' reports.
//!
//! The same authentication as the upload. Where it names the caller (a JWT `sub`, an IAM
//! ARN), a caller sees only its own uploads: another's answers 404, as an unknown id does, so
//! ids cannot be probed. Without a status table the API knows no upload (404
//! `status_not_configured`). A DynamoDB failure answers 503 with a fixed message and a
//! request id; the log line with that id keeps the SDK's text.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sluice_protocol::BatchStatus;

use super::{
    authorize, identity, public_error, AppState, ErrorBody, IngestError, RETRY_AFTER_SECONDS,
};
use crate::report::store::{batch_status, text};

/// Why a status was not answered.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0:?} is not a batch id (a UUID, as the upload answered)")]
    BadBatchId(String),
    #[error("no upload {0} is known here")]
    NotFound(String),
    #[error("upload status is not configured on this API (SLUICE_STATUS_TABLE is not set)")]
    NotConfigured,
    #[error("{0}")]
    Unavailable(String),
}

impl QueryError {
    pub(super) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            QueryError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            QueryError::BadBatchId(_) => (StatusCode::BAD_REQUEST, "bad_batch_id"),
            QueryError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            QueryError::NotConfigured => (StatusCode::NOT_FOUND, "status_not_configured"),
            QueryError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "status_unavailable"),
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        if let QueryError::Unauthorized = self {
            return IngestError::Unauthorized.into_response();
        }
        let (status, code) = self.status_and_code();
        let fixed = matches!(self, QueryError::Unavailable(_))
            .then_some("the upload status could not be read; retry shortly");
        let (message, request_id) = public_error(status, fixed, &self, "Status not read");
        let body = ErrorBody {
            error: code,
            message,
            line: None,
            column: None,
            errors: None,
            total_errors: None,
            request_id,
        };
        let mut resp = (status, Json(&body)).into_response();
        if status.is_server_error() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        resp
    }
}

pub(super) async fn get_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Path(batch_id): Path<String>,
) -> Result<Json<BatchStatus>, QueryError> {
    authorize(&state.config, &headers).map_err(|_| QueryError::Unauthorized)?;
    let id = uuid::Uuid::parse_str(&batch_id)
        .map_err(|_| QueryError::BadBatchId(batch_id.clone()))?
        .to_string();
    let records = state.records.as_ref().ok_or(QueryError::NotConfigured)?;
    let item = records
        .get(&id)
        .await
        .map_err(|e| QueryError::Unavailable(e.to_string()))?
        .ok_or_else(|| QueryError::NotFound(id.clone()))?;
    if let Some(caller) = identity::caller(&extensions) {
        if text(&item, "owner") != Some(caller.as_str()) {
            return Err(QueryError::NotFound(id));
        }
    }
    Ok(Json(batch_status(&id, &item)))
}
