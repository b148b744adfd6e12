//! One connection's TLS (no I/O: the backend reads and writes the socket, the core gives the
//! plaintext to the connection's HTTP state machine).
//!
//! ```text
//!  socket bytes ──receive──► incoming (≤ one record + a read) ──rustls──► request bytes
//!  queued responses (shared Bytes, mapped segment memfds) ──seal──► outgoing ──► socket
//! ```
//!
//! Built on rustls's unbuffered API: records are encrypted straight from the shared buffers
//! the connection queued into this link's one output buffer, which is the only copy (the
//! encryption's own). The output buffer is allocated while there is something to send and
//! freed when it is all sent, so an idle viewer holds none.
//!
//! For a completion-based backend the bytes given by [`TlsLink::begin_send`] stay where they
//! are, unchanged, until [`TlsLink::sent`]: while a send is in flight, new records are only
//! appended after them, and the buffer is never moved, compacted or freed.

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::ServerConfig;
use std::sync::Arc;

/// The output buffer's size: a flight of handshake messages (a certificate chain of at most
/// [`super::MAX_CHAIN_BYTES`]) or a few full records of application data.
pub const OUT_CAPACITY: usize = 64 * 1024;
/// Room kept free of application data for what rustls must send on its own (alerts, session
/// tickets, key updates, close_notify).
const RESERVE: usize = 8 * 1024;
/// The largest plaintext of one record.
const MAX_RECORD: usize = 16 * 1024;
/// A record's overhead beyond its plaintext, at most (header, nonce, tag, padding, type).
const RECORD_OVERHEAD: usize = 256;
/// Ciphertext held waiting for the rest of its record, at most: a whole record of the largest
/// size TLS allows, and a read.
pub const MAX_INCOMING: usize = 18 * 1024 + 16 * 1024;

/// Why a link failed (the connection closes once the alert, if any, is sent).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    /// The peer broke the protocol, or no version, cipher, name or protocol could be agreed.
    #[error("TLS: {0}")]
    Protocol(String),
    /// More ciphertext arrived than one record can be.
    #[error("TLS: a record larger than any TLS allows")]
    Oversized,
    /// rustls had more to send than the output buffer could hold.
    #[error("TLS: output buffer full")]
    OutputFull,
}

/// One connection's TLS session and its buffers.
pub struct TlsLink {
    session: UnbufferedServerConnection,
    incoming: Vec<u8>,
    out: Option<Box<[u8]>>,
    /// `out[sent..filled]` is to be sent.
    sent: usize,
    filled: usize,
    /// A completion-based backend holds `out[sent..sending]`.
    sending: Option<usize>,
    /// Application data may be sent (the handshake got far enough).
    open: bool,
    /// The handshake completed (it is counted once).
    established: bool,
    peer_closed: bool,
    close_queued: bool,
    failed: Option<TlsFailure>,
}

impl std::fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLink")
            .field("incoming", &self.incoming.len())
            .field("outgoing", &(self.filled - self.sent))
            .field("open", &self.open)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// What a call to [`TlsLink::receive`] found besides request bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The handshake completed in this call.
    pub established: bool,
}

impl TlsLink {
    /// A link for a connection just accepted.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            session: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            out: None,
            sent: 0,
            filled: 0,
            sending: None,
            open: false,
            established: false,
            peer_closed: false,
            close_queued: false,
            failed: None,
        })
    }

    /// Ciphertext read from the socket: request bytes are appended to `plaintext`.
    pub fn receive(
        &mut self,
        ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<Received, TlsFailure> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        if self.incoming.len() + ciphertext.len() > MAX_INCOMING {
            return Err(self.fail(TlsFailure::Oversized));
        }
        self.incoming.extend_from_slice(ciphertext);
        let was = self.established;
        self.compact();
        self.pump(Some(plaintext), None)?;
        if self.incoming.is_empty() && self.incoming.capacity() > 4096 {
            // A large record has been taken: an idle connection keeps no large buffer.
            self.incoming = Vec::new();
        }
        Ok(Received {
            established: !was && self.established,
        })
    }

    /// Encrypt as much of `plaintext` (the connection's queued buffers, in order) as the output
    /// buffer has room for; returns how many plaintext bytes were taken. Nothing is taken
    /// before the handshake allows application data, or once the link is closing or failed.
    pub fn seal(&mut self, plaintext: &[&[u8]]) -> Result<usize, TlsFailure> {
        if !self.open || self.close_queued || self.failed.is_some() {
            return Ok(0);
        }
        self.compact();
        let mut taken = 0;
        let mut pieces = plaintext.iter().copied().filter(|p| !p.is_empty());
        let mut current = pieces.next();
        let mut encrypt = |out: &mut OutBuf<'_>, traffic: &mut Encrypt<'_>| {
            while let Some(piece) = current {
                let room = out.room().saturating_sub(RESERVE + RECORD_OVERHEAD);
                let n = piece.len().min(MAX_RECORD).min(room);
                if n == 0 {
                    return Ok(());
                }
                let wrote = traffic(&piece[..n], out.spare()).map_err(|e| match e {
                    EncryptError::InsufficientSize(_) => TlsFailure::OutputFull,
                    other => TlsFailure::Protocol(other.to_string()),
                })?;
                out.advance(wrote);
                taken += n;
                current = if n == piece.len() {
                    pieces.next()
                } else {
                    Some(&piece[n..])
                };
            }
            Ok(())
        };
        self.pump(None, Some(&mut encrypt))?;
        Ok(taken)
    }

    /// Queue a close_notify (once): the connection ends cleanly after what is queued.
    pub fn close(&mut self) {
        if self.close_queued || self.failed.is_some() {
            return;
        }
        self.close_queued = true;
        if !self.open {
            // Nothing was sent over the session: there is nothing to end cleanly.
            return;
        }
        self.compact();
        let mut notify = |out: &mut OutBuf<'_>, _: &mut Encrypt<'_>| {
            out.close_notify = true;
            Ok(())
        };
        let _ = self.pump(None, Some(&mut notify));
    }

    /// Ciphertext waiting to be sent (for a readiness-based backend; see [`TlsLink::sent`]).
    pub fn outgoing(&self) -> &[u8] {
        match &self.out {
            Some(out) => &out[self.sent..self.filled],
            None => &[],
        }
    }

    /// For a completion-based backend: the ciphertext to send now. These bytes stay where they
    /// are, unchanged, until [`TlsLink::sent`] is called.
    pub fn begin_send(&mut self) -> &[u8] {
        self.sending = Some(self.filled);
        self.outgoing()
    }

    /// `n` bytes of the outgoing ciphertext were written (ends a send begun with
    /// [`TlsLink::begin_send`]).
    pub fn sent(&mut self, n: usize) {
        self.sending = None;
        self.sent = (self.sent + n).min(self.filled);
        if self.sent == self.filled {
            // All sent: an idle connection keeps no buffer.
            self.out = None;
            self.sent = 0;
            self.filled = 0;
        }
    }

    /// Whether ciphertext waits to be sent.
    pub fn wants_write(&self) -> bool {
        self.filled > self.sent
    }

    /// Whether application data may be sent.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Whether the peer said it will send no more (close_notify).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Whether a close_notify is queued (or the session never opened and is ending).
    pub fn closing(&self) -> bool {
        self.close_queued
    }

    /// Why the link failed, if it did.
    pub fn failure(&self) -> Option<&TlsFailure> {
        self.failed.as_ref()
    }

    /// Whether it is done: failed or closing, with nothing left to send.
    pub fn finished(&self) -> bool {
        (self.failed.is_some() || self.close_queued) && !self.wants_write()
    }

    fn fail(&mut self, failure: TlsFailure) -> TlsFailure {
        self.failed.get_or_insert(failure).clone()
    }

    /// Unsent ciphertext moved to the front of the buffer, when room for a record is short
    /// and no send holds the bytes (only the rest of a partial write is moved).
    fn compact(&mut self) {
        let Some(out) = self.out.as_mut() else { return };
        if self.sending.is_some() || self.sent == 0 {
            return;
        }
        if out.len() - self.filled < RESERVE + RECORD_OVERHEAD + MAX_RECORD {
            out.copy_within(self.sent..self.filled, 0);
            self.filled -= self.sent;
            self.sent = 0;
        }
    }

    /// Run the session until it needs more ciphertext or has nothing more to do. Handshake
    /// records are encoded into the output buffer (and count as transmitted: the buffer is
    /// sent in order); application data records are appended to `plaintext`; when the session
    /// can send application data, `write` runs once (encrypting through what it is given).
    fn pump(
        &mut self,
        mut plaintext: Option<&mut Vec<u8>>,
        mut write: Option<&mut Writer<'_>>,
    ) -> Result<(), TlsFailure> {
        // Bounded: each turn consumes a record, a queued message or a transmission; an error
        // gets turns to encode and transmit its alert.
        for _ in 0..1024 {
            let mut out = OutBuf {
                buf: &mut self.out,
                filled: &mut self.filled,
                close_notify: false,
            };
            let UnbufferedStatus { mut discard, state } =
                self.session.process_tls_records(&mut self.incoming);
            let step = match state {
                Err(e) => Step::Error(TlsFailure::Protocol(e.to_string())),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let mut step = Step::Again;
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                if let Some(p) = plaintext.as_deref_mut() {
                                    p.extend_from_slice(record.payload);
                                }
                            }
                            Err(e) => {
                                step = Step::Fail(TlsFailure::Protocol(e.to_string()));
                                break;
                            }
                        }
                    }
                    step
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    match encode.encode(out.spare()) {
                        Ok(n) => {
                            out.advance(n);
                            Step::Again
                        }
                        Err(EncodeError::InsufficientSize(_)) => Step::Fail(TlsFailure::OutputFull),
                        Err(EncodeError::AlreadyEncoded) => Step::Again,
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    // Queued in order in the output buffer: as good as sent, and never twice.
                    transmit.done();
                    Step::Again
                }
                Ok(ConnectionState::BlockedHandshake) => Step::Stop,
                Ok(ConnectionState::PeerClosed) => Step::PeerClosed,
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let mut step = Step::Writable;
                    if let Some(writer) = write.take() {
                        let mut encrypt = |p: &[u8], o: &mut [u8]| traffic.encrypt(p, o);
                        if let Err(f) = writer(&mut out, &mut encrypt) {
                            step = Step::Fail(f);
                        }
                        if out.close_notify {
                            match traffic.queue_close_notify(out.spare()) {
                                Ok(n) => out.advance(n),
                                Err(_) => step = Step::Fail(TlsFailure::OutputFull),
                            }
                        }
                    }
                    step
                }
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    Step::Fail(TlsFailure::Protocol("early data was not offered".into()))
                }
                // Closed, and states rustls may add.
                Ok(_) => Step::Stop,
            };
            let discard = discard.min(self.incoming.len());
            self.incoming.drain(..discard);
            match step {
                Step::Again => {}
                Step::PeerClosed => self.peer_closed = true,
                Step::Writable => {
                    self.open = true;
                    self.established |= !self.session.is_handshaking();
                    return self.failed_or_ok();
                }
                Step::Stop => return self.failed_or_ok(),
                Step::Fail(f) => return Err(self.fail(f)),
                Step::Error(f) => {
                    // Nothing more is read; the turns left encode and transmit the alert
                    // rustls queued for the error, if any.
                    self.incoming.clear();
                    if self.failed.is_some() {
                        return Err(self.fail(f));
                    }
                    self.failed = Some(f);
                }
            }
        }
        Err(self.fail(TlsFailure::Protocol("the session made no progress".into())))
    }

    fn failed_or_ok(&self) -> Result<(), TlsFailure> {
        match &self.failed {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }
}

/// What one turn of [`TlsLink::pump`] came to.
enum Step {
    Again,
    PeerClosed,
    Writable,
    Stop,
    Fail(TlsFailure),
    Error(TlsFailure),
}

/// Encrypts one record of application data into a buffer; returns its length.
type Encrypt<'a> = dyn FnMut(&[u8], &mut [u8]) -> Result<usize, EncryptError> + 'a;

/// Writes application data into the output buffer through the encryption it is given.
type Writer<'a> = dyn FnMut(&mut OutBuf<'_>, &mut Encrypt<'_>) -> Result<(), TlsFailure> + 'a;

/// The output buffer during one turn of [`TlsLink::pump`]: room after what is filled,
/// allocated on first use.
struct OutBuf<'a> {
    buf: &'a mut Option<Box<[u8]>>,
    filled: &'a mut usize,
    /// A writer asks for a close_notify after its data.
    close_notify: bool,
}

impl OutBuf<'_> {
    fn spare(&mut self) -> &mut [u8] {
        let buf = self
            .buf
            .get_or_insert_with(|| vec![0; OUT_CAPACITY].into_boxed_slice());
        &mut buf[*self.filled..]
    }

    fn room(&self) -> usize {
        match self.buf.as_deref() {
            Some(b) => b.len() - *self.filled,
            None => OUT_CAPACITY,
        }
    }

    fn advance(&mut self, n: usize) {
        *self.filled += n;
    }
}

#[cfg(test)]
mod tests;
