//! The JSON API's routes and answers (`/api/v1/…`, documented in `engine/api/openapi.json`)
//! and the `/metrics` route. Every error is a JSON object with an `error` message.

use super::store::{StoreError, StreamFields};
use super::{metrics, token, ControlState};
use crate::player;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

type Shared = Arc<ControlState>;

/// An API error: its status and a message, answered as `{"error": "…"}`.
#[derive(Debug)]
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        let mut response = (self.0, Json(Body { error: self.1 })).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shardcast\""),
            );
        }
        response
    }
}

/// The routes, with the token required where it is.
pub(super) fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/v1/server", get(server_info))
        .route("/api/v1/streams", get(list_streams))
        .route(
            "/api/v1/streams/{name}",
            get(stream_status).put(put_stream).delete(delete_stream),
        )
        .route("/api/v1/tls", get(tls_status))
        .route("/api/v1/tls/reload", axum::routing::post(tls_reload))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/sessions/{id}", axum::routing::delete(stop_session))
        .route("/api/v1/pushes", get(list_pushes))
        .route("/api/v1/pushes/{id}", axum::routing::delete(stop_push))
        .route(
            "/api/v1/streams/{name}/pushes",
            axum::routing::post(start_push),
        )
        .route(
            "/api/v1/streams/{name}/recording",
            axum::routing::post(start_recording).delete(stop_recording),
        )
        .route("/api/v1/streams/{name}/recordings", get(list_recordings))
        .route(
            "/api/v1/streams/{name}/recordings/{file}",
            get(download_recording),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let mut metrics = Router::new().route("/metrics", get(metrics_text));
    if state.metrics_need_token {
        metrics = metrics.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    }
    Router::new()
        .merge(api)
        .merge(metrics)
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here".into(),
            )
        })
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such API endpoint".into()) })
        .with_state(state)
}

async fn require_token(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if token::matches(t, &state.token) => next.run(request).await,
        Some(_) => ApiError(StatusCode::UNAUTHORIZED, "the bearer token is wrong".into()).into_response(),
        None => ApiError(
            StatusCode::UNAUTHORIZED,
            "an API token is needed: Authorization: Bearer TOKEN (see the server's state directory)".into(),
        )
        .into_response(),
    }
}

#[derive(Serialize)]
struct ServerInfo {
    version: &'static str,
    shards: usize,
    cpus: Vec<usize>,
    io_backend: &'static str,
    uptime_seconds: f64,
    started_at: u64,
    streams: usize,
    /// Where API changes are persisted; `null`: the embedded configuration, changes are kept
    /// in memory only.
    config_file: Option<String>,
}

async fn server_info(State(state): State<Shared>) -> Json<ServerInfo> {
    Json(ServerInfo {
        version: env!("CARGO_PKG_VERSION"),
        shards: state.cpus.len(),
        cpus: state.cpus.clone(),
        io_backend: state.io_backend,
        uptime_seconds: state.started.elapsed().as_secs_f64(),
        started_at: state.started_unix,
        streams: state.catalog().len(),
        config_file: state.store.file().map(|p| p.display().to_string()),
    })
}

/// The TLS certificates in use and what TLS did.
#[derive(Serialize)]
struct TlsStatus {
    certificates: Vec<CertificateStatus>,
    handshakes: u64,
    failures: u64,
    unknown_name: u64,
    connections: u64,
    reloads: u64,
    reloads_refused: u64,
}

#[derive(Serialize)]
struct CertificateStatus {
    cert: String,
    key: String,
    names: Vec<String>,
    /// UNIX seconds.
    not_after: i64,
}

fn tls_of(state: &ControlState) -> Result<TlsStatus, ApiError> {
    let Some(certs) = state.store.certificates() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this server has no TLS listener ([server.tls])".into(),
        ));
    };
    let c = certs.counters();
    Ok(TlsStatus {
        certificates: certs
            .current()
            .certs()
            .iter()
            .map(|cert| CertificateStatus {
                cert: cert.files.cert.display().to_string(),
                key: cert.files.key.display().to_string(),
                names: cert.names.clone(),
                not_after: cert.not_after,
            })
            .collect(),
        handshakes: c.handshakes.load(Ordering::Relaxed),
        failures: c.failures.load(Ordering::Relaxed),
        unknown_name: c.unknown_name.load(Ordering::Relaxed),
        connections: c.connections.load(Ordering::Relaxed),
        reloads: c.reloads.load(Ordering::Relaxed),
        reloads_refused: c.reloads_refused.load(Ordering::Relaxed),
    })
}

async fn tls_status(State(state): State<Shared>) -> Result<Json<TlsStatus>, ApiError> {
    tls_of(&state).map(Json)
}

/// Read the certificate files again; refused (422, with the reason) when they do not load,
/// and the running ones stay.
async fn tls_reload(State(state): State<Shared>) -> Result<Json<TlsStatus>, ApiError> {
    tls_of(&state)?;
    let store = state.store.clone();
    let reloaded = tokio::task::spawn_blocking(move || store.reload_certificates())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match reloaded {
        Ok(()) => {
            tracing::info!("TLS certificates reloaded through the API");
            tls_of(&state).map(Json)
        }
        Err(e) => {
            tracing::error!("TLS certificate reload refused: {e}; the running certificates stay");
            Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
        }
    }
}

#[derive(Serialize)]
struct StreamSummary {
    name: String,
    source: String,
    state: player::StreamState,
    input_bitrate: u64,
    viewers: Viewers,
}

/// Viewers by protocol: progressive HTTP-TS connections open now, and HLS sessions (one
/// player, many requests) not yet ended.
#[derive(Serialize)]
struct Viewers {
    http_ts: u64,
    hls: u64,
}

impl Viewers {
    fn of(state: &ControlState, info: &crate::shard::StreamInfo) -> Self {
        Self {
            http_ts: info.counters.viewers.load(Ordering::Relaxed),
            hls: state.sessions().viewers(&info.name).1,
        }
    }
}

#[derive(Serialize)]
struct Segments {
    sealed: u64,
    dropped: u64,
    listed: usize,
    target_duration: u64,
    held_bytes: u64,
}

#[derive(Serialize)]
struct StreamStatus {
    name: String,
    source: String,
    state: player::StreamState,
    input_bitrate: u64,
    tracks: Vec<player::Track>,
    received_bytes: u64,
    sent_bytes: u64,
    continuity_errors: u64,
    malformed_packets: u64,
    sync_skipped_bytes: u64,
    kernel_drops: u64,
    input: Input,
    viewers: Viewers,
    segments: Segments,
    config: StreamFields,
}

/// How the stream's source is doing.
#[derive(Serialize)]
struct Input {
    /// The source's kind (its URL's scheme).
    kind: &'static str,
    /// Whether it is connected now; `null` for sources that do not connect (UDP, files).
    connected: Option<bool>,
    /// Connections accepted or made.
    connections: u64,
    /// Connections refused (not in `allow=`).
    refused: u64,
    /// Failed attempts to connect.
    failures: u64,
    /// Why the latest attempt failed, until one succeeds.
    last_error: Option<String>,
    /// For a UDP source sending TS in RTP: its datagrams, and what their sequence numbers
    /// say was lost or late.
    rtp: Option<Rtp>,
    /// Switches between the sources of a failover list.
    switches: u64,
    /// A failover list's state.
    failover: Option<crate::source::FailoverStatus>,
    /// The SRT connection's statistics while one feeds the stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    srt: Option<crate::sys::srt::Stats>,
}

/// What a stream's RTP sequence numbers say.
#[derive(Serialize)]
struct Rtp {
    datagrams: u64,
    lost: u64,
    late: u64,
}

fn now_ms() -> i64 {
    (crate::sys::unix_ns() / 1_000_000) as i64
}

/// `GET /api/v1/streams`: every stream, by name.
async fn list_streams(State(state): State<Shared>) -> Json<Vec<StreamSummary>> {
    let now = now_ms();
    let catalog = state.catalog();
    let mut streams: Vec<_> = catalog.streams().map(|(_, s)| s).collect();
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Json(
        streams
            .into_iter()
            .map(|info| {
                let window = info.hls_window.load_full();
                StreamSummary {
                    name: info.name.clone(),
                    source: info.source_url.clone(),
                    state: player::state(window.as_deref(), now),
                    input_bitrate: info.counters.input_rate.at(crate::sys::unix_ns()),
                    viewers: Viewers::of(&state, info),
                }
            })
            .collect(),
    )
}

async fn stream_status(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<StreamStatus>, ApiError> {
    let catalog = state.catalog();
    let Some((_, info)) = catalog.find(&name) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no stream named {name:?}"),
        ));
    };
    let window = info.hls_window.load_full();
    let c = info.counters.snapshot();
    Ok(Json(StreamStatus {
        name: info.name.clone(),
        source: info.source_url.clone(),
        state: player::state(window.as_deref(), now_ms()),
        input_bitrate: info.counters.input_rate.at(crate::sys::unix_ns()),
        tracks: player::tracks(window.as_deref()),
        received_bytes: c.bytes_in,
        sent_bytes: c.bytes_out,
        continuity_errors: c.continuity_errors,
        malformed_packets: c.malformed_packets,
        sync_skipped_bytes: c.sync_skipped_bytes,
        kernel_drops: c.kernel_drops,
        input: Input {
            kind: info.source.kind(),
            connected: info.source.connects().then_some(c.source_connected > 0),
            connections: c.source_connections,
            refused: c.source_refused,
            failures: c.source_failures,
            rtp: (c.rtp_datagrams > 0).then_some(Rtp {
                datagrams: c.rtp_datagrams,
                lost: c.rtp_lost,
                late: c.rtp_late,
            }),
            last_error: info
                .counters
                .source_error
                .lock()
                .ok()
                .and_then(|e| e.clone()),
            switches: c.source_switches,
            failover: info.counters.failover.lock().ok().and_then(|f| f.clone()),
            srt: info.counters.srt.lock().ok().and_then(|s| s.clone()),
        },
        viewers: Viewers::of(&state, info),
        segments: Segments {
            sealed: c.segments,
            dropped: c.segments_dropped,
            listed: window.as_ref().map_or(0, |w| w.listed),
            target_duration: window.as_ref().map_or(0, |w| w.target_duration),
            held_bytes: c.segment_bytes,
        },
        config: StreamFields::of(&info.config),
    }))
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            StoreError::FileRefused(_) | StoreError::FileInvalid(_) => StatusCode::CONFLICT,
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Vetoed(_) => StatusCode::FORBIDDEN,
            StoreError::Read { .. } | StoreError::Write { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// Run a store edit (which reads, fsyncs and renames files) off the control thread's loop.
async fn blocking<T: Send + 'static>(
    edit: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(edit)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the edit failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// `PUT /api/v1/streams/{name}`: create (201) or replace (200) a stream, persisted before the
/// answer; the body is the stream's settings (`source` and the optional `[[stream]]` keys).
async fn put_stream(
    State(state): State<Shared>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    // A body that never comes in full must not hold the connection (and an edit) forever.
    let body = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        axum::body::to_bytes(request.into_body(), 64 * 1024),
    )
    .await
    .map_err(|_| {
        ApiError(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive within 10 s".into(),
        )
    })?
    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the request body: {e}")))?;
    let fields: StreamFields = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body must be a JSON stream object: {e}"),
        )
    })?;
    let store = state.store.clone();
    let (n, f) = (name.clone(), fields.clone());
    let created = blocking(move || store.put_stream(&n, &f)).await?;
    let catalog = state.catalog();
    let settings = catalog
        .find(&name)
        .map_or(fields, |(_, info)| StreamFields::of(&info.config));
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(settings)).into_response())
}

/// `DELETE /api/v1/streams/{name}`: end the stream (its viewers are closed) and remove it from
/// the configuration.
async fn delete_stream(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.store.clone();
    blocking(move || store.delete_stream(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
struct SessionFilter {
    stream: Option<String>,
}

/// `GET /api/v1/sessions[?stream=NAME]`: the viewer sessions now, oldest first.
async fn list_sessions(
    State(state): State<Shared>,
    axum::extract::Query(filter): axum::extract::Query<SessionFilter>,
) -> Json<Vec<super::sessions::Session>> {
    Json(state.sessions().list(filter.stream.as_deref()))
}

#[derive(serde::Deserialize)]
struct StopOptions {
    /// Seconds its requests are refused (403) after the stop; default 60.
    block: Option<u64>,
}

/// `DELETE /api/v1/sessions/{id}[?block=SECONDS]`: close the session's connections, refuse
/// its requests for a while, and end it (its access-log line says `stopped`).
async fn stop_session(
    State(state): State<Shared>,
    Path(id): Path<String>,
    axum::extract::Query(options): axum::extract::Query<StopOptions>,
) -> Result<StatusCode, ApiError> {
    let key = state
        .sessions()
        .stop(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no session {id:?}")))?;
    let block = std::time::Duration::from_secs(options.block.unwrap_or(60).min(86_400));
    state
        .links
        .broadcast(&crate::session::ShardCommand::Stop(key, block));
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/pushes[?stream=NAME]`: the streams being sent on, with what each did.
async fn list_pushes(
    State(state): State<Shared>,
    axum::extract::Query(filter): axum::extract::Query<SessionFilter>,
) -> Json<Vec<serde_json::Value>> {
    Json(
        state
            .push_outs
            .list()
            .iter()
            .filter(|p| filter.stream.as_deref().is_none_or(|s| s == p.stream))
            .map(|p| p.status())
            .collect(),
    )
}

#[derive(serde::Deserialize)]
struct PushRequest {
    target: String,
}

/// `POST /api/v1/streams/{name}/pushes` with `{"target": URL}`: send the running stream on
/// until it ends or the push is stopped; `201 {"id": N}`. `PUSH_OUT_START` is asked after the
/// answer (the push is listed once it runs).
async fn start_push(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(request): Json<PushRequest>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let catalog = state.catalog();
    let Some((_, info)) = catalog.find(&name).filter(|(_, i)| !i.config.is_template()) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no stream named {name:?} is running"),
        ));
    };
    use crate::output::push_out::{Origin, StartError};
    match state
        .push_outs
        .start(&info.name, &info.taps, &request.target, Origin::Api)
    {
        Ok(id) => Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id })))),
        Err(e @ StartError::Target(_)) => Err(ApiError(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// `DELETE /api/v1/pushes/{id}`: stop a push (`PUSH_END` fires).
async fn stop_push(
    State(state): State<Shared>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    if state.push_outs.stop(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, format!("no push {id}")))
    }
}

/// `POST /api/v1/streams/{name}/recording`, with the stream's `record` settings or a body of
/// them (`{"path": …, "rotate": …}`): record the running stream until it ends or the
/// recording is stopped; `201 {"id": N}`.
async fn start_recording(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body: Option<crate::config::RecordConfig> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("the body is not record settings: {e}"),
            )
        })?)
    };
    let catalog = state.catalog();
    let Some((_, info)) = catalog.find(&name).filter(|(_, i)| !i.config.is_template()) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no stream named {name:?} is running"),
        ));
    };
    let Some(record) = body.or_else(|| info.config.record.clone()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("stream {name:?} has no record settings: send them ({{\"path\": …}})"),
        ));
    };
    record
        .check()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    use crate::output::push_out::{Origin, StartError};
    match state
        .push_outs
        .start_recording(&info.name, &info.taps, record.spec(), Origin::Api)
    {
        Ok(id) => Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id })))),
        Err(e @ StartError::Recording) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(e @ StartError::Record(_)) => Err(ApiError(StatusCode::BAD_REQUEST, e.to_string())),
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// `DELETE /api/v1/streams/{name}/recording`: stop the stream's recording (its file ends
/// whole and `RECORDING_END` fires).
async fn stop_recording(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    match state.push_outs.recording_of(&name) {
        Some(push) => {
            state.push_outs.stop(push.id);
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("stream {name:?} is not being recorded"),
        )),
    }
}

/// `GET /api/v1/streams/{name}/recordings`: the finished files of the stream's recording (its
/// configured path, or the running recording's), oldest first; none without a recording.
async fn list_recordings(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let Some(template) = recording_template(&state, &name)? else {
        return Ok(Json(Vec::new()));
    };
    // Viewers are served the files of the configured path (a recording started by the API
    // with a path of its own is downloaded, not played).
    let played = state
        .catalog()
        .find(&name)
        .and_then(|(_, info)| info.config.record.as_ref().map(|r| r.path == template))
        .unwrap_or(false);
    let stream = name.clone();
    let files = tokio::task::spawn_blocking(move || {
        crate::output::push_out::record::files(&template, &stream)
    })
    .await
    .unwrap_or_default();
    Ok(Json(
        files
            .into_iter()
            .map(|(file, bytes, modified)| {
                let mut entry = serde_json::json!({
                    "file": file,
                    "bytes": bytes,
                    "modified": modified,
                    "download": format!("/api/v1/streams/{name}/recordings/{file}"),
                });
                if played {
                    entry["vod"] = format!("/vod/{name}/{file}/index.m3u8").into();
                    entry["player"] = format!("/vod/{name}/{file}.html").into();
                }
                entry
            })
            .collect(),
    ))
}

/// The path template of `name`'s recording: the running recording's, else its configured
/// one; `None` when it has neither; 404 for no such stream.
fn recording_template(state: &Shared, name: &str) -> Result<Option<String>, ApiError> {
    let catalog = state.catalog();
    let Some((_, info)) = catalog.find(name) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no stream named {name:?}"),
        ));
    };
    Ok(match state.push_outs.recording_of(name) {
        Some(push) => Some(push.target.clone()),
        None => info.config.record.as_ref().map(|r| r.path.clone()),
    })
}

/// `GET /api/v1/streams/{name}/recordings/{file}`: a finished file of the stream's recording,
/// whole or one byte range (`Range: bytes=…`), streamed from the disk.
async fn download_recording(
    State(state): State<Shared>,
    Path((name, file)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let missing = || {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no recording {file:?} of {name:?}"),
        )
    };
    let path = recording_template(&state, &name)?
        .filter(|_| crate::vod::plausible_file(&file))
        .and_then(|t| crate::output::push_out::record::file_path(&t, &name, &file))
        .ok_or_else(missing)?;
    let mut opened = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => {
            return Err(ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot open the recording: {e}"),
            ))
        }
    };
    let len = opened
        .metadata()
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match crate::http::byte_range(range, len as usize) {
        crate::http::ByteRange::Full => (StatusCode::OK, 0, len),
        crate::http::ByteRange::Part { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start as u64, end as u64)
        }
        crate::http::ByteRange::Unsatisfiable => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response())
        }
    };
    opened
        .seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        opened.take(end - start),
        256 * 1024,
    ));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(&state),
    )
        .into_response()
}
