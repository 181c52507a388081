//! `pods/NAME/exec` over WebSocket (the `v5.channel.k8s.io` and `v4.channel.k8s.io`
//! subprotocols kubectl ≥ 1.30 speaks).

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::response::Response;

use super::handlers::fail;
use super::kinds;
use super::{Ctx, Rest};
use crate::apiserver::ApiError;

pub async fn exec(_rest: Arc<Rest>, ctx: Ctx, _request: Request<Body>) -> Response {
    fail::<kinds::Pods>(
        &ctx,
        ApiError::BadRequest(
            "exec over the Kubernetes API is not served yet: use kubelab exec".into(),
        ),
    )
}
