//! Errors as kube-apiserver sends them: a `Status` object with its HTTP code, reason and
//! details, so clients print their usual words (`Error from server (NotFound): pods "x"
//! not found`). Owns the wording of an `ApiError` for REST; gRPC has its own codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::apiserver::ApiError;

/// Which object a request was about, for the error's words and details.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// `pods`, `nodes`...
    pub resource: String,
    /// `Pod`, `Node`... (for "Pod "x" is invalid").
    pub kind: String,
    pub group: String,
    pub name: String,
}

/// A `Status` object and its HTTP code.
pub struct Failure {
    pub code: StatusCode,
    pub body: Value,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (
            self.code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            self.body.to_string(),
        )
            .into_response()
    }
}

/// A failure with Kubernetes' reason and message.
pub fn failure(code: StatusCode, reason: &str, message: &str, details: Value) -> Failure {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if !details.is_null() {
        body["details"] = details;
    }
    Failure { code, body }
}

/// The field an error message starts with (`spec.containers[0].image: Required value`).
fn field_of(message: &str) -> Option<&str> {
    let (field, _) = message.split_once(": ")?;
    let is_path = !field.is_empty()
        && !field.contains(' ')
        && field.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    is_path.then_some(field)
}

impl Target {
    fn details(&self) -> Value {
        let mut d = json!({ "kind": self.resource });
        if !self.name.is_empty() {
            d["name"] = json!(self.name);
        }
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }

    /// `pods "web"` (or `pods` for a collection).
    fn named(&self) -> String {
        if self.name.is_empty() {
            self.resource.clone()
        } else {
            format!("{} {:?}", self.resource, self.name)
        }
    }

    /// The error as kube-apiserver would send it for this target.
    pub fn failure(&self, error: ApiError) -> Failure {
        let text = match &error {
            ApiError::Invalid(m)
            | ApiError::Conflict(m)
            | ApiError::Forbidden(m)
            | ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::Unavailable(m)
            | ApiError::FailedPrecondition(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::UnsupportedMediaType(m)
            | ApiError::NotFound(m)
            | ApiError::AlreadyExists(m) => m.clone(),
            other => other.to_string(),
        };
        match error {
            ApiError::NotFound(_) => failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{text} not found"),
                self.details(),
            ),
            ApiError::AlreadyExists(_) => failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{text} already exists"),
                self.details(),
            ),
            ApiError::Invalid(_) => {
                // As kube-apiserver: details name the kind (not the resource) and each
                // cause its field; clients print "field: message" per cause.
                let mut details = self.details();
                details["kind"] = json!(self.kind);
                let cause = match field_of(&text) {
                    Some(field) => json!({
                        "reason": "FieldValueInvalid",
                        "message": text[field.len() + 2..],
                        "field": field,
                    }),
                    None => json!({ "reason": "FieldValueInvalid", "message": text }),
                };
                details["causes"] = json!([cause]);
                let what = if self.name.is_empty() {
                    self.kind.clone()
                } else {
                    format!("{} {:?}", self.kind, self.name)
                };
                failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    &format!("{what} is invalid: {text}"),
                    details,
                )
            }
            ApiError::Conflict(_) => {
                failure(StatusCode::CONFLICT, "Conflict", &text, self.details())
            }
            ApiError::Forbidden(_) => {
                let message = if text.contains(" is forbidden") {
                    text
                } else {
                    format!("{} is forbidden: {text}", self.named())
                };
                failure(StatusCode::FORBIDDEN, "Forbidden", &message, self.details())
            }
            ApiError::Unauthorized(_) => {
                failure(StatusCode::UNAUTHORIZED, "Unauthorized", &text, Value::Null)
            }
            ApiError::BadRequest(_) | ApiError::FailedPrecondition(_) => {
                failure(StatusCode::BAD_REQUEST, "BadRequest", &text, Value::Null)
            }
            ApiError::MethodNotAllowed(_) => failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &text,
                self.details(),
            ),
            ApiError::UnsupportedMediaType(_) => failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &text,
                Value::Null,
            ),
            ApiError::Expired(asked, oldest) => failure(
                StatusCode::GONE,
                "Expired",
                &format!("too old resource version: {asked} ({oldest})"),
                Value::Null,
            ),
            ApiError::WatchTooSlow(_) => failure(StatusCode::GONE, "Expired", &text, Value::Null),
            ApiError::TooLarge(..) => failure(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                &text,
                json!({ "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }], "retryAfterSeconds": 1 }),
            ),
            ApiError::Unavailable(_) => failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                &text,
                Value::Null,
            ),
            ApiError::Storage(_) | ApiError::Internal(_) => failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &text,
                Value::Null,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Target {
        Target {
            resource: "pods".into(),
            kind: "Pod".into(),
            group: String::new(),
            name: name.into(),
        }
    }

    #[test]
    fn errors_read_as_kube_apiserver_words_them() {
        let f = pod("x").failure(ApiError::NotFound("pods \"x\"".into()));
        assert_eq!(f.code, StatusCode::NOT_FOUND);
        assert_eq!(f.body["message"], "pods \"x\" not found");
        assert_eq!(f.body["details"]["kind"], "pods");
        let f = pod("x").failure(ApiError::Invalid(
            "spec.containers: a pod needs at least one container".into(),
        ));
        assert_eq!(f.code.as_u16(), 422);
        assert_eq!(
            f.body["message"],
            "Pod \"x\" is invalid: spec.containers: a pod needs at least one container"
        );
        assert_eq!(f.body["details"]["causes"][0]["field"], "spec.containers");
        let f = pod("x").failure(ApiError::Forbidden("node \"n\" may not delete pods".into()));
        assert_eq!(
            f.body["message"],
            "pods \"x\" is forbidden: node \"n\" may not delete pods"
        );
    }
}
