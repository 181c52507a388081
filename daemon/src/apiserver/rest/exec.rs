//! `pods/NAME/exec` over WebSocket, as kubectl ≥ 1.30 speaks it: the subprotocols
//! `v5.channel.k8s.io` and `v4.channel.k8s.io`, each binary message starting with its
//! channel — 0 stdin, 1 stdout, 2 stderr, 3 the final Status (with the exit code), 4
//! terminal resizes, and in v5 255 to close a channel (the end of stdin). The command
//! runs at the pod's agent (`agent_proxy`), on a terminal with `tty=true`.
//!
//! axum's WebSocket support (tungstenite) does the framing; this module only maps
//! channels. SPDY, what kubectl before 1.30 uses, is refused with a message saying so.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use kubelab_proto::v1::{ExecRequest, TerminalSize};
use serde_json::{json, Value};

use super::handlers::fail;
use super::kinds;
use super::{Ctx, Rest};
use crate::apiserver::auth::Identity;
use crate::apiserver::registry::Registry;
use crate::apiserver::ApiError;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The subprotocols served, the preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// What the query asks: `command` (repeated), `container`, `stdin`, `stdout`, `stderr`,
/// `tty`.
struct ExecOptions {
    command: Vec<String>,
    container: String,
    stdin: bool,
    tty: bool,
}

fn options(query: Option<&str>) -> ExecOptions {
    let mut o = ExecOptions {
        command: Vec::new(),
        container: String::new(),
        stdin: false,
        tty: false,
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "command" => o.command.push(value.into_owned()),
            "container" => o.container = value.into_owned(),
            "stdin" => o.stdin = value == "true" || value == "1",
            "tty" => o.tty = value == "true" || value == "1",
            _ => {}
        }
    }
    o
}

pub async fn exec(rest: Arc<Rest>, ctx: Ctx, request: Request<Body>) -> Response {
    match start(rest, &ctx, request).await {
        Ok(response) => response,
        Err(e) => fail::<kinds::Pods>(&ctx, e),
    }
}

async fn start(rest: Arc<Rest>, ctx: &Ctx, request: Request<Body>) -> Result<Response, ApiError> {
    ctx.who
        .require(&[Identity::Admin], "run commands in containers")?;
    let upgrade = request
        .headers()
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let opts = options(request.uri().query());
    // Errors before the upgrade come back as Status objects kubectl prints (and a
    // kubectl that falls back to SPDY after a refused upgrade sees them there too).
    rest.pods
        .get(&ctx.who, &ctx.info.namespace, &ctx.info.name)
        .await?;
    rest.pods
        .proxy
        .check(&ctx.info.namespace, &ctx.info.name, &opts.container, "exec")?;
    if opts.command.is_empty() {
        return Err(ApiError::BadRequest(
            "you must specify at least 1 command".into(),
        ));
    }
    if upgrade.starts_with("spdy") {
        return Err(ApiError::BadRequest(
            "exec over SPDY is not supported: kubelab serves exec over WebSocket (v5.channel.k8s.io), which kubectl 1.30 and later speaks; use a newer kubectl, or kubelab exec".into(),
        ));
    }
    let (mut parts, _) = request.into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "exec needs a WebSocket upgrade (v5.channel.k8s.io): {}",
                e.body_text()
            ))
        })?
        .protocols(PROTOCOLS);
    let v5 = ws
        .selected_protocol()
        .is_some_and(|p| p.as_bytes() == PROTOCOLS[0].as_bytes());
    if ws.selected_protocol().is_none() {
        return Err(ApiError::BadRequest(format!(
            "exec: none of the WebSocket subprotocols offered is served (kubelab speaks {})",
            PROTOCOLS.join(", ")
        )));
    }
    let first = ExecRequest {
        namespace: ctx.info.namespace.clone(),
        name: ctx.info.name.clone(),
        container: opts.container.clone(),
        command: opts.command.clone(),
        stdin: Vec::new(),
        stdin_eof: !opts.stdin,
        tty: opts.tty,
        resize: None,
    };
    let (stdin_tx, stdin_rx) = tokio::sync::mpsc::channel::<ExecRequest>(16);
    let output = rest
        .pods
        .proxy
        .exec(first, tokio_stream::wrappers::ReceiverStream::new(stdin_rx))
        .await?;
    let command = opts.command.clone();
    Ok(ws
        .on_upgrade(move |socket| session(socket, v5, command, stdin_tx, output))
        .into_response())
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(bytes.into())
}

/// The Status the last message carries: Success, or the exit code as kubectl reads it.
fn exit_status(command: &[String], code: Option<i32>, error: Option<String>) -> Value {
    match (code, error) {
        (_, Some(message)) => json!({
            "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError",
        }),
        (Some(0), None) => json!({ "metadata": {}, "status": "Success" }),
        (code, None) => {
            let code = code.unwrap_or(1);
            json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
                ),
                "reason": "NonZeroExitCode",
                "details": { "causes": [{ "reason": "ExitCode", "message": code.to_string() }] },
            })
        }
    }
}

async fn session(
    socket: WebSocket,
    v5: bool,
    command: Vec<String>,
    stdin: tokio::sync::mpsc::Sender<ExecRequest>,
    mut output: crate::apiserver::agent_proxy::AgentStream<kubelab_proto::v1::ExecOutput>,
) {
    let (mut sink, mut source) = socket.split();
    // Client → agent: stdin, resizes, the end of stdin.
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&channel, rest)) = data.split_first() else {
                continue;
            };
            let request = match channel {
                STDIN => ExecRequest {
                    stdin: rest.to_vec(),
                    ..Default::default()
                },
                RESIZE => {
                    let size: Value = serde_json::from_slice(rest).unwrap_or_default();
                    // A terminal's size fits in 16 bits; anything larger is clamped.
                    let dimension = |key: &str, default: u64| {
                        size[key]
                            .as_u64()
                            .unwrap_or(default)
                            .min(u64::from(u16::MAX)) as u32
                    };
                    ExecRequest {
                        resize: Some(TerminalSize {
                            width: dimension("Width", 80),
                            height: dimension("Height", 24),
                        }),
                        ..Default::default()
                    }
                }
                CLOSE if v5 && rest.first() == Some(&STDIN) => ExecRequest {
                    stdin_eof: true,
                    ..Default::default()
                },
                _ => continue,
            };
            if stdin.send(request).await.is_err() {
                break;
            }
        }
    });
    // Agent → client: output, then the exit status.
    let mut code = None;
    let mut error = None;
    while let Some(item) = output.next().await {
        match item {
            Ok(out) => {
                if !out.stdout.is_empty() && sink.send(frame(STDOUT, &out.stdout)).await.is_err() {
                    break;
                }
                if !out.stderr.is_empty() && sink.send(frame(STDERR, &out.stderr)).await.is_err() {
                    break;
                }
                if out.exit_code.is_some() {
                    code = out.exit_code;
                }
            }
            Err(e) => {
                error = Some(e.message().to_string());
                break;
            }
        }
    }
    let status = exit_status(&command, code, error);
    let _ = sink
        .send(frame(STATUS, status.to_string().as_bytes()))
        .await;
    // A normal closure (1000): the client reads it as the end of every stream.
    let _ = sink
        .send(Message::Close(Some(axum::extract::ws::CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
    reader.abort();
}
