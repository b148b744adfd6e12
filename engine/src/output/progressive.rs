//! Progressive MPEG-TS over HTTP (`/{stream}.ts`): one response body that does not end, fed
//! by the shard from its view of the stream, starting at the newest access point.

use super::{MediaFile, Output, Published};
use crate::http::{RequestHead, Route};
use crate::session::Protocol;

/// The progressive output.
pub(super) struct Progressive;

impl Output for Progressive {
    fn name(&self) -> &'static str {
        "http-ts"
    }

    fn protocol(&self) -> Protocol {
        Protocol::HttpTs
    }

    /// `{stream}.ts`, the name without a `/`.
    fn parse<'a>(&self, path: &'a str) -> Option<(&'a str, MediaFile)> {
        let stream = path.strip_suffix(".ts")?;
        (!stream.is_empty() && !stream.contains('/')).then_some((stream, MediaFile::Live))
    }

    fn answer(&self, stream: &Published<'_>, file: MediaFile, _head: &RequestHead) -> Route {
        match file {
            MediaFile::Live => Route::Live {
                stream: stream.slot,
                content_type: "video/mp2t",
            },
            _ => Route::NotFound,
        }
    }
}
