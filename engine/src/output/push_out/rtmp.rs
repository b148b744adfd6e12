//! Pushes over RTMP: `rtmp://HOST[:PORT]/APP/KEY`, as an encoder publishes to a platform
//! (YouTube's `rtmp://a.rtmp.youtube.com/live2/KEY`, Twitch's) or an RTMP server (nginx's RTMP
//! module, MistServer, shardcast's own RTMP ingest).
//!
//! A task per push, on the sources' runtime: connect, the RTMP handshake and session as a
//! client (`rml_rtmp`: connect to APP, publish KEY live), then the stream from its next access
//! point remuxed into FLV tags (the protocols crate's `flv::mux`: H.264 and AAC, their sequence
//! headers first and again when they change) sent as RTMP video and audio messages. What the
//! server sends (acknowledgements, pings, status) is read and answered as it comes. A refused
//! connect or publish, a closed connection, or a server that takes nothing for [`STALL`] ends
//! the connection; it is made again with the sources' backoff, as for TCP pushes, and nothing
//! is queued meanwhile.

use super::connect::{back_off, connect_to, not_connected, CONNECT_TIMEOUT, LOOK, STALL};
use super::{PushOut, RtmpTarget};
use crate::source::retry::Retry;
use crate::stream::tap::{Accept, Follow};
use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use shardcast_protocols::flv::mux::{FlvTag, TsToFlv};
use shardcast_protocols::flv::TAG_VIDEO;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;

/// How long the handshake, connect and publish may take.
const PUBLISH_WITHIN: Duration = Duration::from_secs(10);
/// Bytes read from the server at once.
const READ: usize = 16 * 1024;

/// Run `push` to `target` until it is stopped.
pub(super) async fn run(push: Arc<PushOut>, target: RtmpTarget, notify: Arc<Notify>) {
    let counters = &push.counters;
    let mut retry = Retry::new();
    let mut connections = 0u64;
    let (host, port) = (target.host.clone(), target.port);
    while !push.stopped() {
        let why = match tokio::time::timeout(CONNECT_TIMEOUT, connect_to(&host, port)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let (mut reader, mut writer) = stream.into_split();
                match tokio::time::timeout(
                    PUBLISH_WITHIN,
                    publish(&target, &mut reader, &mut writer),
                )
                .await
                {
                    Ok(Ok((session, early))) => {
                        connections += 1;
                        if connections > 1 {
                            counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        retry.up(Instant::now());
                        counters.connected.store(true, Ordering::Relaxed);
                        push.note(format!("publishing to {}", target.tc_url()));
                        tracing::info!(stream = %push.stream, id = push.id, "push publishing to {}", target.tc_url());
                        let why = send(&push, session, early, reader, writer, &notify).await;
                        counters.connected.store(false, Ordering::Relaxed);
                        if push.stopped() {
                            break;
                        }
                        why
                    }
                    Ok(Err(why)) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                        why
                    }
                    Err(_) => {
                        counters.failures.fetch_add(1, Ordering::Relaxed);
                        format!(
                            "{} did not take the publish within {} s",
                            target.tc_url(),
                            PUBLISH_WITHIN.as_secs()
                        )
                    }
                }
            }
            Ok(Err(e)) => not_connected(&push, &host, port, Some(e)),
            Err(_) => not_connected(&push, &host, port, None),
        };
        back_off(&push, &mut retry, why, &notify).await;
    }
    counters.connected.store(false, Ordering::Relaxed);
}

/// The handshake, connect and publish: the session once the server took the publish, and what
/// it sent after (to be handled next).
async fn publish(
    target: &RtmpTarget,
    reader: &mut OwnedReadHalf,
    writer: &mut OwnedWriteHalf,
) -> Result<(ClientSession, Vec<u8>), String> {
    let failed = |e: std::io::Error| format!("connection failed: {e}");
    let mut handshake = Handshake::new(PeerType::Client);
    let first = handshake
        .generate_outbound_p0_and_p1()
        .map_err(|e| format!("RTMP handshake: {e:?}"))?;
    writer.write_all(&first).await.map_err(failed)?;
    let mut buf = vec![0u8; READ];
    let mut left = loop {
        let n = reader.read(&mut buf).await.map_err(failed)?;
        if n == 0 {
            return Err("closed by the server during the RTMP handshake".into());
        }
        match handshake
            .process_bytes(&buf[..n])
            .map_err(|e| format!("RTMP handshake: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                writer.write_all(&response_bytes).await.map_err(failed)?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                writer.write_all(&response_bytes).await.map_err(failed)?;
                break remaining_bytes;
            }
        }
    };
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(target.tc_url());
    let (mut session, results) =
        ClientSession::new(config).map_err(|e| format!("RTMP session: {e:?}"))?;
    let mut pending = results;
    pending.push(
        session
            .request_connection(target.app.clone())
            .map_err(|e| format!("RTMP connect: {e:?}"))?,
    );
    // What the server said last that was not an answer we wait for (for the log, when it
    // closes the connection instead of answering).
    let mut said = String::new();
    loop {
        let mut published = false;
        while !pending.is_empty() {
            let mut next = Vec::new();
            for result in pending.drain(..) {
                match result {
                    ClientSessionResult::OutboundResponse(packet) => {
                        writer.write_all(&packet.bytes).await.map_err(failed)?;
                    }
                    ClientSessionResult::RaisedEvent(event) => match event {
                        ClientSessionEvent::ConnectionRequestAccepted => next.push(
                            session
                                .request_publishing(target.key.clone(), PublishRequestType::Live)
                                .map_err(|e| format!("RTMP publish: {e:?}"))?,
                        ),
                        ClientSessionEvent::ConnectionRequestRejected { description } => {
                            return Err(format!(
                                "{} refused the connection: {description}",
                                target.tc_url()
                            ));
                        }
                        ClientSessionEvent::PublishRequestAccepted => published = true,
                        ClientSessionEvent::UnhandleableOnStatusCode { code } => {
                            return Err(format!("{} refused the publish: {code}", target.tc_url()));
                        }
                        // An `_error` answer to the publish (what servers refuse a key with).
                        ClientSessionEvent::UnknownTransactionResultReceived {
                            additional_values,
                            ..
                        } if status(&additional_values).is_some() => {
                            let (code, description) =
                                status(&additional_values).unwrap_or_default();
                            return Err(format!(
                                "{} refused the publish: {code} ({description})",
                                target.tc_url()
                            ));
                        }
                        other => said = format!("{other:?}"),
                    },
                    ClientSessionResult::UnhandleableMessageReceived(m) => {
                        said = format!("{m:?}");
                    }
                }
            }
            pending = next;
        }
        if published {
            return Ok((session, std::mem::take(&mut left)));
        }
        let input = if left.is_empty() {
            let n = reader.read(&mut buf).await.map_err(failed)?;
            if n == 0 {
                said.truncate(300);
                return Err(format!(
                    "{} closed the connection before the publish started{}",
                    target.tc_url(),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(" (it said {said})")
                    }
                ));
            }
            buf[..n].to_vec()
        } else {
            std::mem::take(&mut left)
        };
        pending = session
            .handle_input(&input)
            .map_err(|e| format!("RTMP session: {e:?}"))?;
    }
}

/// Send the stream until the connection fails or the push stops: why it ended.
async fn send(
    push: &PushOut,
    mut session: ClientSession,
    early: Vec<u8>,
    mut reader: OwnedReadHalf,
    mut writer: OwnedWriteHalf,
    notify: &Notify,
) -> String {
    if !early.is_empty() {
        if let Err(why) = answer(&mut session, &early, &mut writer).await {
            return why;
        }
    }
    // What was queued before this connection is old: start at the next access point.
    while push.tap.take().is_some() {}
    let mut follow = Follow::default();
    let mut mux = TsToFlv::new();
    let mut skipping = false;
    let mut tags: Vec<FlvTag> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; READ];
    loop {
        tags.clear();
        out.clear();
        while let Some(chunk) = push.tap.take() {
            if follow.accept(&chunk) == Accept::Skip {
                skipping = true;
                continue;
            }
            if std::mem::take(&mut skipping) {
                // A gap: what was being assembled is incomplete.
                mux.restart();
            }
            mux.push(&chunk.data, |tag| tags.push(tag));
        }
        if push.stopped() {
            if let Ok(results) = session.stop_publishing() {
                for r in results {
                    if let ClientSessionResult::OutboundResponse(p) = r {
                        out.extend_from_slice(&p.bytes);
                    }
                }
                let _ = write(&mut writer, &out).await;
            }
            let _ = writer.shutdown().await;
            return "stopped".into();
        }
        if !tags.is_empty() {
            let mut sent = 0u64;
            for tag in tags.drain(..) {
                let data = Bytes::from(tag.body);
                let at = RtmpTimestamp::new(tag.timestamp_ms);
                sent += data.len() as u64;
                let result = if tag.kind == TAG_VIDEO {
                    session.publish_video_data(data, at, !tag.key)
                } else {
                    session.publish_audio_data(data, at, !tag.key)
                };
                match result {
                    Ok(ClientSessionResult::OutboundResponse(packet)) => {
                        out.extend_from_slice(&packet.bytes)
                    }
                    Ok(_) => {}
                    Err(e) => return format!("RTMP session: {e:?}"),
                }
            }
            if let Err(why) = write(&mut writer, &out).await {
                return why;
            }
            push.counters.bytes.fetch_add(sent, Ordering::Relaxed);
            continue;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(LOOK) => {}
            read = reader.read(&mut buf) => match read {
                Ok(0) => return "closed by the server".into(),
                Ok(n) => {
                    if let Err(why) = answer(&mut session, &buf[..n], &mut writer).await {
                        return why;
                    }
                }
                Err(e) => return format!("connection failed: {e}"),
            },
        }
    }
}

/// Handle what the server sent while publishing: answer what needs an answer; a status that
/// ends the publish ends the connection.
async fn answer(
    session: &mut ClientSession,
    input: &[u8],
    writer: &mut OwnedWriteHalf,
) -> Result<(), String> {
    let results = session
        .handle_input(input)
        .map_err(|e| format!("RTMP session: {e:?}"))?;
    let mut out = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.extend_from_slice(&p.bytes),
            ClientSessionResult::RaisedEvent(ClientSessionEvent::UnhandleableOnStatusCode {
                code,
            }) => return Err(format!("the server ended the publish: {code}")),
            _ => {}
        }
    }
    write(writer, &out).await
}

/// The code and description of a status object among `values`, if there is one.
fn status(values: &[Amf0Value]) -> Option<(String, String)> {
    values.iter().find_map(|v| match v {
        Amf0Value::Object(fields) => {
            let text = |name: &str| match fields.get(name) {
                Some(Amf0Value::Utf8String(s)) => Some(s.chars().take(200).collect::<String>()),
                _ => None,
            };
            Some((text("code")?, text("description").unwrap_or_default()))
        }
        _ => None,
    })
}

async fn write(writer: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(STALL, writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("connection failed: {e}")),
        Err(_) => Err(format!("the server took nothing for {} s", STALL.as_secs())),
    }
}
