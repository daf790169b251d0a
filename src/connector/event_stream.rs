//! Server-Sent Events framing, as the WHATWG HTML standard ("interpreting an event stream")
//! defines it: pure code, fed bytes as they arrive, in chunks of any size.
//!
//! Owns splitting lines on CRLF, LF or CR (a CRLF split across two chunks counts once),
//! skipping a leading byte-order mark and `:` comments, the `event`, `data`, `id` and `retry`
//! fields (data lines joined with `\n`, an `id` holding NUL ignored, `retry` only when all
//! digits), and dispatching an event at each blank line (not when its data is empty). Does
//! not own what an event means (`sse`, `http`).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    pub data: String,
    /// The last event id seen so far (it persists across events, as the standard says).
    pub id: Option<String>,
    /// A `retry:` reconnection time in milliseconds, when this event carried one.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The event's type, `message` by default.
    pub fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

/// Turns a byte stream into events. Feed it chunks; take events as they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF at the start of the next one is part of it.
    after_cr: bool,
    started: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    last_id: Option<String>,
    retry: Option<u64>,
    /// The last `retry:` the stream gave, dispatched or not (it applies at once).
    reconnection_ms: Option<u64>,
}

/// Longest line accepted (1 MiB): a server that never ends a line cannot exhaust memory.
const MAX_LINE: usize = 1 << 20;
/// Largest event accepted (16 MiB of data lines).
const MAX_EVENT: usize = 16 << 20;

/// What can go wrong while parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event-stream line is longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("an event is larger than {MAX_EVENT} bytes")]
    EventTooLarge,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// The last event id the stream set (for `Last-Event-ID` on a reconnection).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the stream set last, in milliseconds.
    pub fn reconnection_ms(&self) -> Option<u64> {
        self.reconnection_ms
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        if !self.started && !chunk.is_empty() {
            // A UTF-8 byte-order mark may open the stream (possibly split across chunks, which
            // real servers never do: only a whole one at the very start is skipped).
            if chunk.starts_with(b"\xEF\xBB\xBF") {
                chunk = &chunk[3..];
            }
            self.started = true;
        }
        for &byte in chunk {
            match byte {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line)? {
                        events.push(event);
                    }
                }
                other => {
                    self.after_cr = false;
                    if self.line.len() >= MAX_LINE {
                        return Err(SseError::LineTooLong);
                    }
                    self.line.push(other);
                }
            }
        }
        Ok(events)
    }

    /// The stream ended: a last event without its blank line is discarded, as the standard
    /// says.
    pub fn finish(&mut self) {
        self.line.clear();
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.event = None;
        self.data.clear();
        self.has_data = false;
        self.retry = None;
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            let event = self.has_data.then(|| SseEvent {
                event: self.event.take().filter(|e| !e.is_empty()),
                data: std::mem::take(&mut self.data),
                id: self.last_id.clone(),
                retry: self.retry,
            });
            self.reset_event();
            return Ok(event);
        }
        if line[0] == b':' {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.data.len() + value.len() >= MAX_EVENT {
                    return Err(SseError::EventTooLarge);
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
                self.reconnection_ms = self.retry;
            }
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(input: &[u8]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        parser.feed(input).unwrap()
    }

    #[test]
    fn the_fields_of_the_standard() {
        let events = parse(
            b"\xEF\xBB\xBF: a comment\nevent: delta\ndata: one\ndata:two\nid: 7\nretry: 1500\n\n\
              data: {\"x\":1}\n\nevent\ndata\n\nid: a\0b\ndata: kept id\n\n",
        );
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].kind(), "delta");
        assert_eq!(events[0].data, "one\ntwo");
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[0].retry, Some(1500));
        assert_eq!(events[1].kind(), "message");
        assert_eq!(events[1].data, "{\"x\":1}");
        assert_eq!(events[1].id.as_deref(), Some("7"), "the last id persists");
        assert_eq!(events[1].retry, None);
        // `event` with no colon sets an empty type (the default), `data` an empty line.
        assert_eq!(events[2].kind(), "message");
        assert_eq!(events[2].data, "");
        // An id containing NUL is ignored.
        assert_eq!(events[3].id.as_deref(), Some("7"));
    }

    #[test]
    fn a_blank_line_without_data_dispatches_nothing_and_an_unfinished_event_is_dropped() {
        let mut parser = SseParser::new();
        assert!(parser
            .feed(b"event: x\n\nretry: abc\n\ndata: half")
            .unwrap()
            .is_empty());
        parser.finish();
        assert!(parser.feed(b"\n\n").unwrap().is_empty());
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_end() {
        let mut parser = SseParser::new();
        assert!(parser.feed(b"data: a\r").unwrap().is_empty());
        let events = parser.feed(b"\n\r\n").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a");
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::new();
        let long = vec![b'a'; MAX_LINE + 1];
        assert_eq!(parser.feed(&long), Err(SseError::LineTooLong));
    }

    proptest! {
        /// However the bytes are cut into chunks, the same events come out.
        #[test]
        fn chunking_never_changes_the_events(
            events in proptest::collection::vec(("[a-z]{0,6}", "[ -~]{0,20}", proptest::option::of("[0-9]{1,3}")), 0..8),
            eol in prop_oneof![Just("\n"), Just("\r\n"), Just("\r")],
            cuts in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let mut text = String::new();
            for (event, data, id) in &events {
                if !event.is_empty() {
                    text.push_str(&format!("event: {event}{eol}"));
                }
                if let Some(id) = id {
                    text.push_str(&format!("id: {id}{eol}"));
                }
                text.push_str(&format!("data: {data}{eol}{eol}"));
            }
            let bytes = text.as_bytes();
            let whole = parse(bytes);
            prop_assert_eq!(whole.len(), events.len());
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= bytes.len()).collect();
            cuts.sort_unstable();
            let mut parser = SseParser::new();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain(std::iter::once(bytes.len())) {
                pieces.extend(parser.feed(&bytes[from..cut]).unwrap());
                from = cut;
            }
            prop_assert_eq!(pieces, whole);
        }
    }
}
