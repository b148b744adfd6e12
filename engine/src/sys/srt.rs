//! SRT through libsrt 1.5, the reference implementation (Debian's `libsrt1.5-openssl` or
//! `libsrt1.5-gnutls`, the one its ffmpeg links), opened at run time when an SRT source first
//! needs it: the server builds and runs without it, and an SRT source on a host without it
//! says what to install.
//!
//! Only what an SRT source needs is bound: live-mode sockets that listen (with a hook that
//! decides each caller during the handshake, from its stream id and address) or call, read
//! without blocking, polled with libsrt's own epoll, and their statistics. libsrt runs its
//! own threads (one receive and one send queue per UDP port, and a collector); the callers of
//! this module run one thread per listener or caller that polls and reads
//! (`source/srt.rs`).
//!
//! Why not the pure-Rust `srt-protocol`: three "not implemented" panics in its listener's handshake
//! are reached by what a caller sends (a passphrase where the listener has none, a key length
//! other than the listener's); a panic there ends the listener task and every connection on
//! its port.
//!
//! The signatures and the statistics structure follow `srt/srt.h` of libsrt 1.5.1.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::{Arc, OnceLock};

/// The library's file names, newest packaging first.
const LIBRARIES: &[&str] = &[
    "libsrt.so.1.5",
    "libsrt-openssl.so.1.5",
    "libsrt-gnutls.so.1.5",
];

/// `SRT_SOCKOPT` values used here.
mod opt {
    pub(super) const RCVSYN: i32 = 2;
    pub(super) const SNDSYN: i32 = 1;
    pub(super) const PASSPHRASE: i32 = 26;
    pub(super) const PBKEYLEN: i32 = 27;
    pub(super) const CONNTIMEO: i32 = 36;
    pub(super) const RCVLATENCY: i32 = 43;
    pub(super) const PEERLATENCY: i32 = 44;
    pub(super) const STREAMID: i32 = 46;
    pub(super) const PEERIDLETIMEO: i32 = 55;
}

/// `SRT_EPOLL_IN`, `SRT_EPOLL_ERR`.
const EPOLL_IN: c_int = 0x1;
const EPOLL_ERR: c_int = 0x8;
/// `SRT_EASYNCRCV`: nothing to read, or no connection to accept, now.
const EASYNCRCV: c_int = 6002;
/// `SRT_EASYNCSND`: no room in the send buffer now.
const EASYNCSND: c_int = 6001;
/// `SRT_REJC_PREDEFINED` plus an HTTP-like code: the rejections a listener's hook sends.
const REJECT_BASE: c_int = 1000;
/// Longest stream id SRT carries.
const MAX_STREAM_ID: usize = 512;

type ListenHookFn = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: c_int,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

type LogHandlerFn = unsafe extern "C" fn(
    opaque: *mut c_void,
    level: c_int,
    file: *const c_char,
    line: c_int,
    area: *const c_char,
    message: *const c_char,
);

/// libsrt's functions, from the library opened once and never closed.
struct Api {
    startup: unsafe extern "C" fn() -> c_int,
    version: unsafe extern "C" fn() -> u32,
    create_socket: unsafe extern "C" fn() -> c_int,
    bind: unsafe extern "C" fn(c_int, *const libc::sockaddr, c_int) -> c_int,
    listen: unsafe extern "C" fn(c_int, c_int) -> c_int,
    listen_callback: unsafe extern "C" fn(c_int, Option<ListenHookFn>, *mut c_void) -> c_int,
    accept: unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut c_int) -> c_int,
    connect: unsafe extern "C" fn(c_int, *const libc::sockaddr, c_int) -> c_int,
    close: unsafe extern "C" fn(c_int) -> c_int,
    setsockflag: unsafe extern "C" fn(c_int, c_int, *const c_void, c_int) -> c_int,
    getsockflag: unsafe extern "C" fn(c_int, c_int, *mut c_void, *mut c_int) -> c_int,
    recvmsg: unsafe extern "C" fn(c_int, *mut c_char, c_int) -> c_int,
    sendmsg: unsafe extern "C" fn(c_int, *const c_char, c_int, c_int, c_int) -> c_int,
    getlasterror: unsafe extern "C" fn(*mut c_int) -> c_int,
    strerror: unsafe extern "C" fn(c_int, c_int) -> *const c_char,
    bstats: unsafe extern "C" fn(c_int, *mut PerfMon, c_int) -> c_int,
    getsockstate: unsafe extern "C" fn(c_int) -> c_int,
    getrejectreason: unsafe extern "C" fn(c_int) -> c_int,
    setrejectreason: unsafe extern "C" fn(c_int, c_int) -> c_int,
    rejectreason_str: unsafe extern "C" fn(c_int) -> *const c_char,
    epoll_create: unsafe extern "C" fn() -> c_int,
    epoll_add_usock: unsafe extern "C" fn(c_int, c_int, *const c_int) -> c_int,
    epoll_remove_usock: unsafe extern "C" fn(c_int, c_int) -> c_int,
    epoll_uwait: unsafe extern "C" fn(c_int, *mut EpollEvent, c_int, i64) -> c_int,
    epoll_set: unsafe extern "C" fn(c_int, i32) -> i32,
    epoll_release: unsafe extern "C" fn(c_int) -> c_int,
    setloghandler: unsafe extern "C" fn(*mut c_void, Option<LogHandlerFn>),
    setloglevel: unsafe extern "C" fn(c_int),
}

/// `SRT_EPOLL_EVENT`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct EpollEvent {
    fd: c_int,
    events: c_int,
}

/// `SRT_TRACEBSTATS` (`struct CBytePerfMon`) of libsrt 1.5, field for field.
#[repr(C)]
#[derive(Default)]
#[allow(non_snake_case)]
struct PerfMon {
    msTimeStamp: i64,
    pktSentTotal: i64,
    pktRecvTotal: i64,
    pktSndLossTotal: c_int,
    pktRcvLossTotal: c_int,
    pktRetransTotal: c_int,
    pktSentACKTotal: c_int,
    pktRecvACKTotal: c_int,
    pktSentNAKTotal: c_int,
    pktRecvNAKTotal: c_int,
    usSndDurationTotal: i64,
    pktSndDropTotal: c_int,
    pktRcvDropTotal: c_int,
    pktRcvUndecryptTotal: c_int,
    byteSentTotal: u64,
    byteRecvTotal: u64,
    byteRcvLossTotal: u64,
    byteRetransTotal: u64,
    byteSndDropTotal: u64,
    byteRcvDropTotal: u64,
    byteRcvUndecryptTotal: u64,
    pktSent: i64,
    pktRecv: i64,
    pktSndLoss: c_int,
    pktRcvLoss: c_int,
    pktRetrans: c_int,
    pktRcvRetrans: c_int,
    pktSentACK: c_int,
    pktRecvACK: c_int,
    pktSentNAK: c_int,
    pktRecvNAK: c_int,
    mbpsSendRate: f64,
    mbpsRecvRate: f64,
    usSndDuration: i64,
    pktReorderDistance: c_int,
    pktRcvAvgBelatedTime: f64,
    pktRcvBelated: i64,
    pktSndDrop: c_int,
    pktRcvDrop: c_int,
    pktRcvUndecrypt: c_int,
    byteSent: u64,
    byteRecv: u64,
    byteRcvLoss: u64,
    byteRetrans: u64,
    byteSndDrop: u64,
    byteRcvDrop: u64,
    byteRcvUndecrypt: u64,
    usPktSndPeriod: f64,
    pktFlowWindow: c_int,
    pktCongestionWindow: c_int,
    pktFlightSize: c_int,
    msRTT: f64,
    mbpsBandwidth: f64,
    byteAvailSndBuf: c_int,
    byteAvailRcvBuf: c_int,
    mbpsMaxBW: f64,
    byteMSS: c_int,
    pktSndBuf: c_int,
    byteSndBuf: c_int,
    msSndBuf: c_int,
    msSndTsbPdDelay: c_int,
    pktRcvBuf: c_int,
    byteRcvBuf: c_int,
    msRcvBuf: c_int,
    msRcvTsbPdDelay: c_int,
    pktSndFilterExtraTotal: c_int,
    pktRcvFilterExtraTotal: c_int,
    pktRcvFilterSupplyTotal: c_int,
    pktRcvFilterLossTotal: c_int,
    pktSndFilterExtra: c_int,
    pktRcvFilterExtra: c_int,
    pktRcvFilterSupply: c_int,
    pktRcvFilterLoss: c_int,
    pktReorderTolerance: c_int,
    pktSentUniqueTotal: i64,
    pktRecvUniqueTotal: i64,
    byteSentUniqueTotal: u64,
    byteRecvUniqueTotal: u64,
    pktSentUnique: i64,
    pktRecvUnique: i64,
    byteSentUnique: u64,
    byteRecvUnique: u64,
}

/// What an SRT call failed with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SrtError {
    /// libsrt could not be opened.
    #[error("libsrt 1.5 is not installed here ({0}): apt install libsrt1.5-openssl")]
    Missing(String),
    /// A call failed; libsrt's words.
    #[error("{0}")]
    Call(String),
}

/// libsrt, opened: the handle SRT sockets are made with.
#[derive(Clone, Copy)]
pub struct Srt {
    api: &'static Api,
}

impl std::fmt::Debug for Srt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "libsrt {}", self.version())
    }
}

static LIBRARY: OnceLock<Result<Api, String>> = OnceLock::new();

/// libsrt, opened and started on first use (the same answer after).
pub fn srt() -> Result<Srt, SrtError> {
    match LIBRARY.get_or_init(open) {
        Ok(api) => Ok(Srt { api }),
        Err(why) => Err(SrtError::Missing(why.clone())),
    }
}

fn open() -> Result<Api, String> {
    let mut tried = Vec::new();
    let library = LIBRARIES.iter().find_map(|name| {
        // SAFETY: loading libsrt runs its constructors, which only set up its own statics
        // (libsrt 1.5 starts nothing before srt_startup).
        match unsafe { libloading::Library::new(*name) } {
            Ok(library) => Some(library),
            Err(e) => {
                tried.push(e.to_string());
                None
            }
        }
    });
    let Some(library) = library else {
        return Err(tried.join("; "));
    };
    // The library stays loaded for the life of the process, so the function pointers taken
    // from it below stay valid.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    macro_rules! function {
        ($name:literal) => {
            // SAFETY: the symbol is libsrt 1.5's function of that name, and the type it is
            // taken as (the field's) is its signature in srt.h.
            *unsafe { library.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("{}: {e}", $name))?
        };
    }
    let api = Api {
        startup: function!("srt_startup"),
        version: function!("srt_getversion"),
        create_socket: function!("srt_create_socket"),
        bind: function!("srt_bind"),
        listen: function!("srt_listen"),
        listen_callback: function!("srt_listen_callback"),
        accept: function!("srt_accept"),
        connect: function!("srt_connect"),
        close: function!("srt_close"),
        setsockflag: function!("srt_setsockflag"),
        getsockflag: function!("srt_getsockflag"),
        recvmsg: function!("srt_recvmsg"),
        sendmsg: function!("srt_sendmsg"),
        getlasterror: function!("srt_getlasterror"),
        strerror: function!("srt_strerror"),
        bstats: function!("srt_bstats"),
        getsockstate: function!("srt_getsockstate"),
        getrejectreason: function!("srt_getrejectreason"),
        setrejectreason: function!("srt_setrejectreason"),
        rejectreason_str: function!("srt_rejectreason_str"),
        epoll_create: function!("srt_epoll_create"),
        epoll_add_usock: function!("srt_epoll_add_usock"),
        epoll_remove_usock: function!("srt_epoll_remove_usock"),
        epoll_uwait: function!("srt_epoll_uwait"),
        epoll_set: function!("srt_epoll_set"),
        epoll_release: function!("srt_epoll_release"),
        setloghandler: function!("srt_setloghandler"),
        setloglevel: function!("srt_setloglevel"),
    };
    // SAFETY: both take plain values; the handler is a function that lives as long as the
    // process and ignores its (null) opaque pointer.
    unsafe {
        (api.setloghandler)(std::ptr::null_mut(), Some(log_line));
        // LOG_NOTICE: libsrt's warnings and errors reach the log, not its debug lines.
        (api.setloglevel)(5);
    }
    // SAFETY: no arguments; a second call (there is none) would only count a reference.
    if unsafe { (api.startup)() } < 0 {
        return Err("srt_startup failed".into());
    }
    Ok(api)
}

/// libsrt's log lines, into the server's log at debug level (they are about one connection
/// each; what matters to an operator is logged by the source).
unsafe extern "C" fn log_line(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    area: *const c_char,
    message: *const c_char,
) {
    // SAFETY: libsrt passes NUL-terminated strings (or null) valid for the call.
    let text = |p: *const c_char| {
        // SAFETY: libsrt passes NUL-terminated strings (or null) valid for the call.
        unsafe { (!p.is_null()).then(|| CStr::from_ptr(p)) }
            .map(|s| s.to_string_lossy())
            .unwrap_or_default()
    };
    let message = text(message);
    let area = text(area);
    tracing::debug!(level, "libsrt {area}: {}", message.trim_end());
}

/// What a listener's hook answers a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Take the connection, encrypted with this passphrase when set (libsrt then refuses a
    /// caller without it or with another one, during the handshake).
    Accept {
        /// The passphrase (10 to 79 characters).
        passphrase: Option<String>,
        /// The receive latency, in milliseconds.
        latency_ms: u32,
    },
    /// Refuse it with this code, HTTP-like (`SRT_REJX_*` less 1000: 403, 404, 405 …).
    Reject(u16),
}

/// A caller, as a listener's hook sees it during the handshake.
#[derive(Clone, Debug)]
pub struct Handshake<'a> {
    /// The socket the connection would be (its id, for matching with what is accepted).
    pub socket: i32,
    /// Where it comes from.
    pub peer: Option<SocketAddr>,
    /// The stream id it sent (empty: none).
    pub stream_id: &'a str,
}

/// Decides callers during the handshake, on libsrt's receive thread.
pub type Hook = dyn Fn(&Handshake<'_>) -> Verdict + Send + Sync;

/// What a listener's hook is called with: libsrt and the hook.
struct HookData {
    api: &'static Api,
    hook: Arc<Hook>,
}

unsafe extern "C" fn listen_hook(
    opaque: *mut c_void,
    ns: c_int,
    _hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int {
    // SAFETY: `opaque` is the `HookData` given with this hook in `listen`, never freed.
    let data = unsafe { &*(opaque as *const HookData) };
    // SAFETY: libsrt passes a NUL-terminated stream id (or null) valid for the call.
    let stream_id = unsafe { (!stream_id.is_null()).then(|| CStr::from_ptr(stream_id)) }
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // SAFETY: libsrt passes the caller's address (or null), valid for the call.
    let peer = unsafe { socket_addr(peer) };
    let handshake = Handshake {
        socket: ns,
        peer,
        stream_id: &stream_id,
    };
    // A panic must not unwind into libsrt: it refuses the caller instead.
    let verdict =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (data.hook)(&handshake)))
            .unwrap_or(Verdict::Reject(500));
    match verdict {
        Verdict::Accept {
            passphrase,
            latency_ms,
        } => {
            let socket = RawSocket {
                api: data.api,
                id: ns,
            };
            let set = socket
                .set_int(opt::RCVLATENCY, latency_ms as c_int)
                .and_then(|()| match &passphrase {
                    Some(p) => socket.set_bytes(opt::PASSPHRASE, p.as_bytes()),
                    None => Ok(()),
                });
            match set {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!("SRT: cannot set up an accepted connection: {e}");
                    // SAFETY: `ns` is the socket of this handshake, alive during the call.
                    unsafe { (data.api.setrejectreason)(ns, REJECT_BASE + 500) };
                    -1
                }
            }
        }
        Verdict::Reject(code) => {
            // SAFETY: as above.
            unsafe { (data.api.setrejectreason)(ns, REJECT_BASE + c_int::from(code)) };
            -1
        }
    }
}

/// A `sockaddr` libsrt gives, as Rust's.
///
/// # Safety
/// `addr` is null or points to a `sockaddr_in` or `sockaddr_in6` as its family says.
unsafe fn socket_addr(addr: *const libc::sockaddr) -> Option<SocketAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise: a valid sockaddr of the size its family says.
    unsafe {
        match c_int::from((*addr).sa_family) {
            libc::AF_INET => {
                let a = &*(addr as *const libc::sockaddr_in);
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                let a = &*(addr as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// A socket id with libsrt, not owned (the hook's view of a connection being set up).
struct RawSocket {
    api: &'static Api,
    id: c_int,
}

impl RawSocket {
    fn check(&self, result: c_int) -> Result<c_int, SrtError> {
        if result < 0 {
            Err(SrtError::Call(last_error(self.api)))
        } else {
            Ok(result)
        }
    }

    fn set_int(&self, option: i32, value: c_int) -> Result<(), SrtError> {
        // SAFETY: the option takes an int; libsrt copies it.
        let r = unsafe {
            (self.api.setsockflag)(
                self.id,
                option,
                (&value as *const c_int).cast(),
                std::mem::size_of::<c_int>() as c_int,
            )
        };
        self.check(r).map(drop)
    }

    fn set_bool(&self, option: i32, value: bool) -> Result<(), SrtError> {
        let value = u8::from(value);
        // SAFETY: the option takes a C++ bool (one byte); libsrt copies it.
        let r = unsafe { (self.api.setsockflag)(self.id, option, (&value as *const u8).cast(), 1) };
        self.check(r).map(drop)
    }

    fn set_bytes(&self, option: i32, value: &[u8]) -> Result<(), SrtError> {
        let len = c_int::try_from(value.len()).map_err(|_| SrtError::Call("too long".into()))?;
        // SAFETY: the option takes a string of `len` bytes; libsrt copies it.
        let r = unsafe { (self.api.setsockflag)(self.id, option, value.as_ptr().cast(), len) };
        self.check(r).map(drop)
    }
}

/// The calling thread's last libsrt error, in words.
fn last_error(api: &Api) -> String {
    let mut errno: c_int = 0;
    // SAFETY: srt_getlasterror writes the system errno to the int it is given.
    let code = unsafe { (api.getlasterror)(&mut errno) };
    // SAFETY: srt_strerror returns a NUL-terminated string it keeps (per thread) until the
    // next call on this thread; it is copied at once.
    let text = unsafe { (api.strerror)(code, errno) };
    if text.is_null() {
        return format!("SRT error {code}");
    }
    // SAFETY: non-null, NUL-terminated, as above.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// The last error's code (`SRT_ERRNO`).
fn last_code(api: &Api) -> c_int {
    // SAFETY: a null errno pointer is allowed.
    unsafe { (api.getlasterror)(std::ptr::null_mut()) }
}

/// How a socket's connection is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The receive latency (TSBPD delay), in milliseconds.
    pub latency_ms: u32,
    /// The passphrase, when encrypted.
    pub passphrase: Option<String>,
    /// The key length when encrypting: 16, 24 or 32 bytes (AES-128, -192, -256).
    pub key_length: Option<u8>,
    /// The stream id a caller sends.
    pub stream_id: Option<String>,
    /// How long a caller waits for the handshake, in milliseconds.
    pub connect_timeout_ms: u32,
    /// How long a connection may hear nothing from its peer, in milliseconds.
    pub peer_idle_ms: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            latency_ms: 120,
            passphrase: None,
            key_length: None,
            stream_id: None,
            connect_timeout_ms: 3000,
            peer_idle_ms: 5000,
        }
    }
}

impl Srt {
    /// libsrt's version, `1.5.1`.
    pub fn version(&self) -> String {
        // SAFETY: no arguments.
        let v = unsafe { (self.api.version)() };
        format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
    }

    fn socket(&self, options: &Options) -> Result<Socket, SrtError> {
        // SAFETY: no arguments; the id it returns is owned by the `Socket` made of it.
        let id = unsafe { (self.api.create_socket)() };
        if id < 0 {
            return Err(SrtError::Call(last_error(self.api)));
        }
        let socket = Socket {
            raw: RawSocket { api: self.api, id },
        };
        let raw = &socket.raw;
        raw.set_bool(opt::RCVSYN, false)?;
        raw.set_bool(opt::SNDSYN, false)?;
        raw.set_int(opt::RCVLATENCY, options.latency_ms as c_int)?;
        raw.set_int(opt::PEERLATENCY, options.latency_ms as c_int)?;
        raw.set_int(opt::PEERIDLETIMEO, options.peer_idle_ms as c_int)?;
        if let Some(passphrase) = &options.passphrase {
            raw.set_bytes(opt::PASSPHRASE, passphrase.as_bytes())?;
        }
        if let Some(length) = options.key_length {
            raw.set_int(opt::PBKEYLEN, c_int::from(length))?;
        }
        Ok(socket)
    }

    /// A socket listening on `addr` whose callers `hook` decides during the handshake (the
    /// passphrase it gives, if any, is then checked by libsrt before the connection is made).
    pub fn listen(
        &self,
        addr: SocketAddr,
        options: &Options,
        backlog: u16,
        hook: Arc<Hook>,
    ) -> Result<Socket, SrtError> {
        let socket = self.socket(options)?;
        let addr = socket2::SockAddr::from(addr);
        // SAFETY: `addr` is a valid sockaddr of `addr.len()` bytes; libsrt copies it.
        let r =
            unsafe { (self.api.bind)(socket.raw.id, addr.as_ptr().cast(), addr.len() as c_int) };
        socket.raw.check(r)?;
        // The hook's data lives as long as the process: libsrt may be in the hook on its own
        // thread while the listener closes, so it is never freed (one small box per listener
        // opened).
        let data: &'static HookData = Box::leak(Box::new(HookData {
            api: self.api,
            hook,
        }));
        // SAFETY: the function has the signature libsrt calls it with, and its opaque pointer
        // is valid for ever.
        let r = unsafe {
            (self.api.listen_callback)(
                socket.raw.id,
                Some(listen_hook),
                (data as *const HookData).cast_mut().cast(),
            )
        };
        socket.raw.check(r)?;
        // SAFETY: plain values.
        let r = unsafe { (self.api.listen)(socket.raw.id, c_int::from(backlog)) };
        socket.raw.check(r)?;
        Ok(socket)
    }

    /// A socket connected to the listener at `addr`: waits up to the connect timeout.
    pub fn call(&self, addr: SocketAddr, options: &Options) -> Result<Socket, SrtError> {
        let socket = self.socket(options)?;
        socket.raw.set_bool(opt::SNDSYN, true)?;
        socket.raw.set_bool(opt::RCVSYN, true)?;
        socket
            .raw
            .set_int(opt::CONNTIMEO, options.connect_timeout_ms as c_int)?;
        if let Some(id) = &options.stream_id {
            socket.raw.set_bytes(opt::STREAMID, id.as_bytes())?;
        }
        let target = socket2::SockAddr::from(addr);
        // SAFETY: a valid sockaddr of its length; with RCVSYN set this blocks until the
        // handshake ends or times out.
        let r = unsafe {
            (self.api.connect)(socket.raw.id, target.as_ptr().cast(), target.len() as c_int)
        };
        if r < 0 {
            let mut why = last_error(self.api);
            let reason = socket.reject_reason();
            if reason != 0 {
                why = format!("{why}: {}", self.reject_reason_text(reason));
            }
            return Err(SrtError::Call(why));
        }
        socket.raw.set_bool(opt::RCVSYN, false)?;
        socket.raw.set_bool(opt::SNDSYN, false)?;
        Ok(socket)
    }

    /// libsrt's words for a rejection reason.
    pub fn reject_reason_text(&self, reason: i32) -> String {
        if reason >= REJECT_BASE {
            return format!("refused by the listener ({})", reason - REJECT_BASE);
        }
        // SAFETY: returns a static NUL-terminated string for any value.
        let text = unsafe { (self.api.rejectreason_str)(reason) };
        if text.is_null() {
            return format!("rejection {reason}");
        }
        // SAFETY: non-null, static, NUL-terminated.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }

    /// A poller over sockets.
    pub fn poll(&self) -> Result<Poll, SrtError> {
        // SAFETY: no arguments; the id is owned by the `Poll`.
        let id = unsafe { (self.api.epoll_create)() };
        if id < 0 {
            return Err(SrtError::Call(last_error(self.api)));
        }
        // SAFETY: plain values. SRT_EPOLL_ENABLE_EMPTY: waiting with nothing in it is a sleep,
        // not an error.
        unsafe { (self.api.epoll_set)(id, 1) };
        Ok(Poll { api: self.api, id })
    }

    /// The state of the socket with this id (a connection a hook accepted, before it is
    /// taken): whether it is gone, and why.
    pub fn state_of(&self, id: i32) -> (SocketState, i32) {
        // SAFETY: any id may be asked about.
        let state = unsafe { (self.api.getsockstate)(id) };
        // SAFETY: as above.
        let reason = unsafe { (self.api.getrejectreason)(id) };
        (SocketState::from(state), reason)
    }
}

/// `SRT_SOCKSTATUS`, as far as a source cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketState {
    /// Being set up or connected.
    Live,
    /// Broken, closing, closed or unknown.
    Gone,
}

impl From<c_int> for SocketState {
    fn from(state: c_int) -> Self {
        // SRTS_INIT 1 … SRTS_CONNECTED 5; SRTS_BROKEN 6 and after.
        if (1..=5).contains(&state) {
            SocketState::Live
        } else {
            SocketState::Gone
        }
    }
}

/// An SRT socket, closed when dropped.
pub struct Socket {
    raw: RawSocket,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SRT socket {}", self.raw.id)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the socket is owned here and closed once.
        unsafe { (self.raw.api.close)(self.raw.id) };
    }
}

/// What [`Socket::receive`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// A message of this many bytes.
    Message(usize),
    /// Nothing now.
    Nothing,
}

impl Socket {
    /// Its id with libsrt.
    pub fn id(&self) -> i32 {
        self.raw.id
    }

    /// A connection waiting on this listener, with its caller's address (`None`: none now).
    pub fn accept(&self) -> Result<Option<(Socket, Option<SocketAddr>)>, SrtError> {
        // SAFETY: sockaddr_storage fits any address libsrt writes; it writes the length.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: as above; the id returned is owned by the new `Socket`.
        let id = unsafe {
            (self.raw.api.accept)(
                self.raw.id,
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if id < 0 {
            if last_code(self.raw.api) == EASYNCRCV {
                return Ok(None);
            }
            return Err(SrtError::Call(last_error(self.raw.api)));
        }
        // SAFETY: libsrt wrote a sockaddr of the family it says.
        let peer = unsafe { socket_addr((&storage as *const libc::sockaddr_storage).cast()) };
        Ok(Some((
            Socket {
                raw: RawSocket {
                    api: self.raw.api,
                    id,
                },
            },
            peer,
        )))
    }

    /// Read one message (a live-mode packet's payload, up to 1456 bytes) into `buf`, without
    /// waiting.
    pub fn receive(&self, buf: &mut [u8]) -> Result<Received, SrtError> {
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: `buf` is writable for `len` bytes; libsrt writes at most that many.
        let n = unsafe { (self.raw.api.recvmsg)(self.raw.id, buf.as_mut_ptr().cast(), len) };
        if n < 0 {
            if last_code(self.raw.api) == EASYNCRCV {
                return Ok(Received::Nothing);
            }
            return Err(SrtError::Call(last_error(self.raw.api)));
        }
        Ok(Received::Message(n as usize))
    }

    /// Send one message (a live-mode packet's payload, at most 1456 bytes) without waiting:
    /// false when the send buffer has no room now.
    pub fn send(&self, message: &[u8]) -> Result<bool, SrtError> {
        let len = c_int::try_from(message.len()).unwrap_or(c_int::MAX);
        // SAFETY: `message` is readable for `len` bytes; libsrt copies them. A TTL of -1 (none)
        // and in-order delivery off are live mode's defaults.
        let n = unsafe { (self.raw.api.sendmsg)(self.raw.id, message.as_ptr().cast(), len, -1, 0) };
        if n < 0 {
            if last_code(self.raw.api) == EASYNCSND {
                return Ok(false);
            }
            return Err(SrtError::Call(last_error(self.raw.api)));
        }
        Ok(true)
    }

    /// The stream id the caller sent (on an accepted socket).
    pub fn stream_id(&self) -> String {
        let mut buf = [0u8; MAX_STREAM_ID + 1];
        let mut len = buf.len() as c_int;
        // SAFETY: `buf` is writable for `len` bytes; libsrt writes the length back.
        let r = unsafe {
            (self.raw.api.getsockflag)(
                self.raw.id,
                opt::STREAMID,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r < 0 {
            return String::new();
        }
        let len = usize::try_from(len).unwrap_or(0).min(MAX_STREAM_ID);
        String::from_utf8_lossy(&buf[..len])
            .trim_end_matches('\0')
            .to_owned()
    }

    /// Why the connection was refused, if it was (`SRT_REJECT_REASON`, or 1000 + a
    /// listener's code).
    pub fn reject_reason(&self) -> i32 {
        // SAFETY: plain value.
        unsafe { (self.raw.api.getrejectreason)(self.raw.id) }
    }

    /// Its statistics since it connected.
    pub fn stats(&self) -> Result<Stats, SrtError> {
        let mut perf = PerfMon::default();
        // SAFETY: `perf` is a `SRT_TRACEBSTATS` of libsrt 1.5's layout; libsrt fills it.
        let r = unsafe { (self.raw.api.bstats)(self.raw.id, &mut perf, 0) };
        self.raw.check(r)?;
        Ok(Stats {
            rtt_ms: perf.msRTT,
            received_packets: u64::try_from(perf.pktRecvTotal).unwrap_or(0),
            received_bytes: perf.byteRecvTotal,
            lost_packets: u64::try_from(perf.pktRcvLossTotal).unwrap_or(0),
            retransmitted_packets: u64::try_from(perf.pktRcvRetrans).unwrap_or(0),
            dropped_packets: u64::try_from(perf.pktRcvDropTotal).unwrap_or(0),
            undecrypted_packets: u64::try_from(perf.pktRcvUndecryptTotal).unwrap_or(0),
            receive_buffer_ms: u64::try_from(perf.msRcvBuf).unwrap_or(0),
            receive_buffer_bytes: u64::try_from(perf.byteRcvBuf).unwrap_or(0),
            receive_buffer_free_bytes: u64::try_from(perf.byteAvailRcvBuf).unwrap_or(0),
            receive_rate_mbps: perf.mbpsRecvRate,
            latency_ms: u64::try_from(perf.msRcvTsbPdDelay).unwrap_or(0),
        })
    }
}

/// A connection's statistics (libsrt's `srt_bstats`, receiving side).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Smoothed round-trip time.
    pub rtt_ms: f64,
    /// Data packets received, retransmissions included.
    pub received_packets: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Packets found missing (each asked for again).
    pub lost_packets: u64,
    /// Retransmitted packets received.
    pub retransmitted_packets: u64,
    /// Packets given up on: not recovered within the latency.
    pub dropped_packets: u64,
    /// Packets that could not be decrypted.
    pub undecrypted_packets: u64,
    /// What the receive buffer holds, in time.
    pub receive_buffer_ms: u64,
    /// What the receive buffer holds, in bytes.
    pub receive_buffer_bytes: u64,
    /// Room left in the receive buffer.
    pub receive_buffer_free_bytes: u64,
    /// Receive rate.
    pub receive_rate_mbps: f64,
    /// The latency agreed in the handshake.
    pub latency_ms: u64,
}

/// libsrt's epoll: which sockets have something to read (or broke).
pub struct Poll {
    api: &'static Api,
    id: c_int,
}

impl std::fmt::Debug for Poll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SRT poll {}", self.id)
    }
}

impl Drop for Poll {
    fn drop(&mut self) {
        // SAFETY: owned here, released once.
        unsafe { (self.api.epoll_release)(self.id) };
    }
}

impl Poll {
    /// Watch `socket` for reading (and errors).
    pub fn add(&self, socket: &Socket) -> Result<(), SrtError> {
        let events = EPOLL_IN | EPOLL_ERR;
        // SAFETY: plain values; libsrt copies the events.
        let r = unsafe { (self.api.epoll_add_usock)(self.id, socket.raw.id, &events) };
        socket.raw.check(r).map(drop)
    }

    /// Stop watching `socket`.
    pub fn remove(&self, socket: &Socket) {
        // SAFETY: plain values.
        unsafe { (self.api.epoll_remove_usock)(self.id, socket.raw.id) };
    }

    /// Wait up to `timeout_ms` for sockets ready; their ids, and whether each broke, into
    /// `ready` (cleared first).
    pub fn wait(&self, timeout_ms: i64, ready: &mut Vec<(i32, bool)>) -> Result<(), SrtError> {
        let mut events = [EpollEvent::default(); 64];
        // SAFETY: `events` is writable for its length; libsrt writes at most that many.
        let n = unsafe {
            (self.api.epoll_uwait)(
                self.id,
                events.as_mut_ptr(),
                events.len() as c_int,
                timeout_ms,
            )
        };
        ready.clear();
        if n < 0 {
            return Err(SrtError::Call(last_error(self.api)));
        }
        let n = usize::try_from(n).unwrap_or(0).min(events.len());
        ready.extend(
            events[..n]
                .iter()
                .map(|e| (e.fd, e.events & EPOLL_ERR != 0)),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    fn free_port() -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    }

    /// A listener whose hook takes stream id `open`, and `locked` with a passphrase, and
    /// records the sockets it accepted.
    fn listener(srt: Srt) -> (Socket, SocketAddr, Arc<Mutex<Vec<i32>>>) {
        let addr = free_port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let hook: Arc<Hook> = Arc::new(move |hs: &Handshake<'_>| match hs.stream_id {
            "open" => Verdict::Accept {
                passphrase: None,
                latency_ms: 80,
            },
            "locked" => {
                record.lock().unwrap().push(hs.socket);
                Verdict::Accept {
                    passphrase: Some("correct horse battery".into()),
                    latency_ms: 80,
                }
            }
            _ => Verdict::Reject(404),
        });
        let socket = srt.listen(addr, &Options::default(), 16, hook).unwrap();
        (socket, addr, seen)
    }

    fn call(
        srt: Srt,
        addr: SocketAddr,
        id: &str,
        passphrase: Option<&str>,
    ) -> Result<Socket, SrtError> {
        srt.call(
            addr,
            &Options {
                stream_id: Some(id.into()),
                passphrase: passphrase.map(Into::into),
                connect_timeout_ms: 1500,
                ..Options::default()
            },
        )
    }

    #[test]
    fn callers_are_decided_in_the_handshake_and_the_accepted_one_is_read() {
        let srt = srt().expect("libsrt 1.5 (the test command installs ffmpeg, which needs it)");
        assert!(srt.version().starts_with("1.5"), "{}", srt.version());
        let (listener, addr, seen) = listener(srt);
        // Unknown stream id: refused with the hook's code.
        let e = call(srt, addr, "nope", None).unwrap_err();
        assert!(e.to_string().contains("404"), "{e}");
        // Wrong passphrase, and none: refused by libsrt after the hook said yes.
        let e = call(srt, addr, "locked", Some("wrong horse battery")).unwrap_err();
        assert!(e.to_string().contains("passphrase"), "{e}");
        let e = call(srt, addr, "locked", None).unwrap_err();
        assert!(!e.to_string().is_empty());
        assert_eq!(seen.lock().unwrap().len(), 2);
        // The sockets the hook accepted for those are gone, and say why.
        let (state, reason) = srt.state_of(seen.lock().unwrap()[0]);
        eprintln!(
            "wrong passphrase: {state:?} {reason} {}",
            srt.reject_reason_text(reason)
        );
        // A passphrase where none is set is refused too.
        assert!(call(srt, addr, "open", Some("correct horse battery")).is_err());
        // The right one connects, and what it sends is read.
        let caller = call(srt, addr, "locked", Some("correct horse battery")).unwrap();
        let poll = srt.poll().unwrap();
        poll.add(&listener).unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        let accepted = loop {
            let mut ready = Vec::new();
            poll.wait(100, &mut ready).unwrap();
            if let Some((socket, peer)) = listener.accept().unwrap() {
                assert_eq!(peer.unwrap().ip(), addr.ip());
                break socket;
            }
            assert!(Instant::now() < deadline, "not accepted");
        };
        assert_eq!(accepted.stream_id(), "locked");
        let _ = caller;
    }
}
