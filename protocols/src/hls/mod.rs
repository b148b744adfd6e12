//! HLS playlists (RFC 8216): types, writer and parser.
