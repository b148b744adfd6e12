//! A request body as it arrives, without I/O: `Content-Length` counted down, or
//! `Transfer-Encoding: chunked` (RFC 9112, section 7.1) decoded, whatever the sizes of the reads.
//!
//! The decoder holds at most one chunk-size line or trailer line ([`MAX_LINE`]) and never the
//! data: each call hands back the slices of data found in what it was given.

use super::RequestBody;

/// Longest chunk-size line (with its extensions) or trailer line held while incomplete.
pub(crate) const MAX_LINE: usize = 4096;

/// Why a body could not be read.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A chunk-size line that is not hexadecimal, or a chunk not followed by CRLF.
    #[error("malformed chunk framing")]
    Malformed,
    /// A chunk-size line or trailer line over [`MAX_LINE`] bytes.
    #[error("chunk-size or trailer line over {MAX_LINE} bytes")]
    LineTooLong,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Bytes of a Content-Length body still to come.
    Length(u64),
    /// Reading a chunk-size line.
    Size,
    /// Bytes of the current chunk still to come.
    Data(u64),
    /// The CRLF after a chunk's data: how many of its two bytes were seen.
    DataEnd(u8),
    /// Reading trailer lines after the last chunk, until an empty one.
    Trailers,
    /// The body is complete.
    Done,
}

/// The body of one request, read piece by piece.
#[derive(Debug)]
pub struct BodyReader {
    state: State,
    /// An incomplete line (chunk size or trailer).
    line: Vec<u8>,
}

impl BodyReader {
    /// A reader for a body framed as `framing`.
    pub fn new(framing: RequestBody) -> Self {
        let state = match framing {
            RequestBody::None => State::Done,
            RequestBody::Length(n) => State::Length(n),
            RequestBody::Chunked => State::Size,
        };
        Self {
            state,
            line: Vec::new(),
        }
    }

    /// Whether the whole body has been read (what follows it is not the body's).
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Read `input`: `data` is called with each piece of body data in it, in order. Returns
    /// how many bytes of `input` belong to the body (all of them until it is done).
    pub fn read<'a>(
        &mut self,
        mut input: &'a [u8],
        mut data: impl FnMut(&'a [u8]),
    ) -> Result<usize, BodyError> {
        let given = input.len();
        while !input.is_empty() {
            match self.state {
                State::Done => break,
                State::Length(left) | State::Data(left) => {
                    let n = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(&input[..n]);
                    input = &input[n..];
                    let left = left - n as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::DataEnd(0),
                        _ => State::Data(left),
                    };
                }
                State::DataEnd(seen) => {
                    let expected = if seen == 0 { b'\r' } else { b'\n' };
                    if input[0] != expected {
                        return Err(BodyError::Malformed);
                    }
                    input = &input[1..];
                    self.state = if seen == 0 {
                        State::DataEnd(1)
                    } else {
                        State::Size
                    };
                }
                State::Size | State::Trailers => {
                    let Some(line) = self.take_line(&mut input)? else {
                        break;
                    };
                    self.state = match self.state {
                        State::Size => match chunk_size(&line)? {
                            0 => State::Trailers,
                            n => State::Data(n),
                        },
                        _ if line.is_empty() => State::Done,
                        _ => State::Trailers, // a trailer field: not used
                    };
                }
            }
        }
        Ok(given - input.len())
    }

    /// The next line of `input` (without its CRLF) once complete, consuming it.
    fn take_line(&mut self, input: &mut &[u8]) -> Result<Option<Vec<u8>>, BodyError> {
        match input.iter().position(|&b| b == b'\n') {
            Some(end) => {
                self.line.extend_from_slice(&input[..end]);
                *input = &input[end + 1..];
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > MAX_LINE {
                    return Err(BodyError::LineTooLong);
                }
                Ok(Some(line))
            }
            None => {
                self.line.extend_from_slice(input);
                *input = &[];
                if self.line.len() > MAX_LINE {
                    return Err(BodyError::LineTooLong);
                }
                Ok(None)
            }
        }
    }
}

/// The size in a chunk-size line: hexadecimal digits, then optional `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, BodyError> {
    let end = line
        .iter()
        .position(|&b| b == b';' || b == b' ' || b == b'\t')
        .unwrap_or(line.len());
    let digits = &line[..end];
    if digits.is_empty() || digits.len() > 15 {
        return Err(BodyError::Malformed);
    }
    digits.iter().try_fold(0u64, |size, &b| {
        let digit = (b as char).to_digit(16).ok_or(BodyError::Malformed)?;
        Ok(size << 4 | u64::from(digit))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read `wire` in pieces of `step` bytes: the data, and the bytes that were the body's.
    fn read_in_steps(framing: RequestBody, wire: &[u8], step: usize) -> (Vec<u8>, usize, bool) {
        let mut reader = BodyReader::new(framing);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in wire.chunks(step) {
            used += reader.read(piece, |d| out.extend_from_slice(d)).unwrap();
            if reader.done() {
                break;
            }
        }
        (out, used, reader.done())
    }

    #[test]
    fn chunked_bodies_decode_the_same_whatever_the_reads() {
        let wire = b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in 1..wire.len() {
            let (data, used, done) = read_in_steps(RequestBody::Chunked, wire, step);
            assert_eq!(data, b"hello, world", "step {step}");
            assert!(done);
            assert_eq!(used, wire.len() - 4, "step {step}");
        }
    }

    #[test]
    fn a_length_body_ends_at_its_length() {
        for step in 1..10 {
            let (data, used, done) = read_in_steps(RequestBody::Length(6), b"abcdefGET /", step);
            assert_eq!((data.as_slice(), used, done), (&b"abcdef"[..], 6, true));
        }
    }

    #[test]
    fn bad_framing_is_refused() {
        for wire in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"ffffffffffffffff\r\n",
        ] {
            let mut r = BodyReader::new(RequestBody::Chunked);
            assert_eq!(r.read(wire, |_| {}), Err(BodyError::Malformed), "{wire:?}");
        }
        let mut r = BodyReader::new(RequestBody::Chunked);
        assert_eq!(
            r.read(&[b'1'; MAX_LINE + 1], |_| {}),
            Err(BodyError::LineTooLong)
        );
    }

    #[test]
    fn a_body_never_ends_before_its_last_chunk() {
        // Data that looks like the end of the body inside a chunk is data.
        let wire = b"9\r\n0\r\n\r\nab\r\n\r\n0\r\n\r\n";
        let (data, _, done) = read_in_steps(RequestBody::Chunked, wire, 3);
        assert_eq!(data, b"0\r\n\r\nab\r\n");
        assert!(done);
    }
}
