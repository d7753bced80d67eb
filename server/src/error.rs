//! The server's error type and the one place where error kinds become HTTP statuses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use shoal_format::{ConflictKind, Error as FormatError};

/// An error answered as `{"error": {"code", "message"}}` with a fitting status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    pub fn schema_mismatch(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl From<FormatError> for ApiError {
    fn from(e: FormatError) -> Self {
        use FormatError as E;
        let (status, code) = match &e {
            E::TableNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::TableAlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            E::VersionNotFound { .. } => (StatusCode::NOT_FOUND, "version_not_found"),
            E::TimestampOutOfRange { .. } => (StatusCode::BAD_REQUEST, "timestamp_out_of_range"),
            E::UnsupportedFeature { .. } | E::UnsupportedProtocol(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unsupported_feature")
            }
            E::InvalidSchema(_) => (StatusCode::BAD_REQUEST, "invalid_schema"),
            E::SchemaMismatch { .. } | E::InvalidPartitionValue { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch")
            }
            E::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            E::NotAllowed(_) => (StatusCode::UNPROCESSABLE_ENTITY, "not_allowed"),
            E::Conflict(ConflictKind::ConcurrentTransaction { .. }) => {
                (StatusCode::CONFLICT, "app_transaction_conflict")
            }
            E::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            E::InvalidExpression(_) => (StatusCode::BAD_REQUEST, "invalid_expression"),
            E::UnknownColumn { .. } => (StatusCode::BAD_REQUEST, "unknown_column"),
            E::ExpressionType(_) => (StatusCode::BAD_REQUEST, "expression_type"),
            E::InvalidUri { .. } => (StatusCode::BAD_REQUEST, "invalid_location"),
            E::Arrow(_) => (StatusCode::BAD_REQUEST, "invalid_data"),
            E::Storage(_) | E::Io(_) => (StatusCode::SERVICE_UNAVAILABLE, "storage"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
