//! The access-log line: one per request, the busiest log output there is.
//!
//! A request's line is a [`Record`], handed to the [`Sink`] the server was started with:
//! - [`Sink::Events`] (the default; `log.format: text`, and wharf started in-process by tests): a
//!   `tracing` event of target [`TARGET`], formatted and written by the installed subscriber.
//! - [`Sink::Json`] (the binary with `log.format: json`): the line `tracing-subscriber`'s JSON
//!   formatter would write for that event — the same keys in the same order, the same value
//!   formatting — formatted here and handed to the log output directly. Through the generic
//!   formatter a line cost ~23,000 instructions (a serde map serializer behind dynamic field
//!   visits, escaping byte by byte); formatted by wharf but still dispatched as an event
//!   (`tracing`'s dispatch, the field visits, each `%` value through `fmt`) ~7,300; written
//!   directly ~1,200 (~3,800 with gathering the record's fields per request). The tests below
//!   compare the direct line with the generic formatter's.
//!
//! Either way the line is written only when `tracing` has target [`TARGET`] enabled at `INFO`
//! (`log.level`, `RUST_LOG`): the server asks before it gathers a record.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

/// The target of access-log events.
pub const TARGET: &str = "wharf::access";

/// Where a request's access-log line goes.
#[derive(Clone, Default)]
pub enum Sink {
    /// A `tracing` event of target [`TARGET`].
    #[default]
    Events,
    /// The JSON line, written to this output (the log output of `log.format: json`).
    Json(Arc<dyn LineOutput>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::Events => "Sink::Events",
            Sink::Json(_) => "Sink::Json",
        })
    }
}

/// An output access-log lines can be written to, one whole line (ending in `\n`) at a time.
pub trait LineOutput: Send + Sync {
    /// Write `line`; a failure is dropped, as `tracing-subscriber` drops a failed write.
    fn write_access_line(&self, line: &[u8]);
}

/// One request's access-log line.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub request_id: &'a str,
    /// The route's operation name (`manifest_get`, `upload_chunk`, `api`, …).
    pub op: &'static str,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub client: SocketAddr,
    /// False when the response body did not reach its end (the client went away, an error).
    pub complete: bool,
}

impl Record<'_> {
    /// Write the line to `sink`.
    pub fn write(&self, sink: &Sink) {
        match sink {
            Sink::Events => tracing::info!(
                target: TARGET,
                request_id = %self.request_id,
                op = self.op,
                method = %self.method,
                path = %self.path,
                status = self.status,
                bytes_in = self.bytes_in,
                bytes_out = self.bytes_out,
                duration_ms = self.duration_ms,
                client = %self.client,
                complete = self.complete,
            ),
            Sink::Json(out) => out.write_access_line(self.json(chrono::Utc::now()).as_bytes()),
        }
    }

    /// The line `tracing-subscriber`'s JSON formatter (flattened) writes for the event of
    /// [`Sink::Events`] at `now`: strings as JSON strings, integers and booleans as they are,
    /// the float as serde_json writes it (`null` when not finite).
    fn json(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        let mut line = String::with_capacity(320);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line, now);
        line.push_str("\",\"level\":\"INFO\",\"request_id\":");
        string(&mut line, self.request_id);
        line.push_str(",\"op\":");
        string(&mut line, self.op);
        line.push_str(",\"method\":");
        string(&mut line, self.method.as_str());
        line.push_str(",\"path\":");
        string(&mut line, self.path);
        line.push_str(",\"status\":");
        line.push_str(itoa::Buffer::new().format(self.status));
        line.push_str(",\"bytes_in\":");
        line.push_str(itoa::Buffer::new().format(self.bytes_in));
        line.push_str(",\"bytes_out\":");
        line.push_str(itoa::Buffer::new().format(self.bytes_out));
        line.push_str(",\"duration_ms\":");
        match serde_json::to_string(&self.duration_ms) {
            Ok(n) => line.push_str(&n),
            Err(_) => line.push_str("null"),
        }
        line.push_str(",\"client\":\"");
        // an address never needs escaping
        socket_addr(&mut line, self.client);
        line.push_str("\",\"complete\":");
        line.push_str(if self.complete { "true" } else { "false" });
        line.push_str(",\"target\":\"");
        line.push_str(TARGET); // nothing in it to escape
        line.push_str("\"}\n");
        line
    }
}

impl<W: std::io::Write + Send> LineOutput for crate::logwriter::Output<W> {
    fn write_access_line(&self, line: &[u8]) {
        let _ = self.write_line(line, true);
    }
}

/// `2026-12-02T00:44:10.239073Z`: RFC 3339, UTC, microseconds (as `tracing-subscriber`'s
/// `SystemTime`).
fn timestamp(out: &mut String, now: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    let year = now.year();
    if !(0..=9999).contains(&year) {
        let _ = write!(out, "{}", now.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
        return;
    }
    digits(out, year as u32, 4);
    out.push('-');
    digits(out, now.month(), 2);
    out.push('-');
    digits(out, now.day(), 2);
    out.push('T');
    digits(out, now.hour(), 2);
    out.push(':');
    digits(out, now.minute(), 2);
    out.push(':');
    digits(out, now.second(), 2);
    out.push('.');
    // a leap second's nanoseconds run past 10^9
    digits(out, now.nanosecond() % 1_000_000_000 / 1000, 6);
    out.push('Z');
}

/// `v` in `width` (≤ 6) decimal digits, zero-padded.
fn digits(out: &mut String, mut v: u32, width: usize) {
    let mut d = [b'0'; 6];
    let width = width.min(d.len());
    for c in d[..width].iter_mut().rev() {
        *c = b'0' + (v % 10) as u8;
        v /= 10;
    }
    for &c in &d[..width] {
        out.push(char::from(c));
    }
}

/// `s` as a JSON string: copied as it is when nothing in it needs escaping (request ids, paths,
/// addresses almost never do), else escaped by serde_json.
fn string(out: &mut String, s: &str) {
    if needs_escape(s.as_bytes()) {
        match serde_json::to_string(s) {
            Ok(escaped) => out.push_str(&escaped),
            Err(_) => out.push_str("null"),
        }
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Whether JSON needs any byte of `b` escaped (a control character, `"` or `\\`), eight bytes
/// at a time: a path is tested in a few dozen instructions instead of several per byte.
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // whether any byte of `v` is below `n` (≤ 128): exact as a yes/no answer
    let any_below = |v: u64, n: u8| v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS != 0;
    let any_eq = |v: u64, c: u8| any_below(v ^ (ONES * u64::from(c)), 1);
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(word);
        if any_below(v, 0x20) || any_eq(v, b'"') || any_eq(v, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

/// `a` as Display writes it; an IPv4 address without `fmt`'s padding machinery (a tenth of its
/// instructions).
fn socket_addr(out: &mut String, a: SocketAddr) {
    match a {
        SocketAddr::V4(v4) => {
            let mut num = itoa::Buffer::new();
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(num.format(octet));
            }
            out.push(':');
            out.push_str(num.format(v4.port()));
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{a}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The lines `emit` logs through the generic JSON formatter (flattened, as `main` sets it
    /// up).
    fn generic_lines(emit: impl Fn()) -> Vec<String> {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .json()
            .flatten_event(true)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    /// A line without its timestamp (the two lines are made at different instants).
    fn untimed(line: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let ts = v["timestamp"].as_str().unwrap().to_string();
        assert_eq!(ts.len(), "2026-12-02T00:44:10.239073Z".len(), "{ts}");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&ts).is_ok(),
            "timestamp {ts}"
        );
        // the raw text, with the timestamp's value blanked: key order and number formatting
        // must be the same, not just the parsed values
        line.replacen(&ts, "", 1)
    }

    #[test]
    fn direct_lines_are_those_of_the_generic_formatter() {
        let client: std::net::SocketAddr = "127.0.0.1:51934".parse().unwrap();
        let v6: std::net::SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let get = http::Method::GET;
        let odd = http::Method::from_bytes(b"PROPFIND").unwrap();
        let record = |request_id, method, path, duration_ms, client, complete| Record {
            request_id,
            op: "manifest_get",
            method,
            path,
            status: 200,
            bytes_in: 0,
            bytes_out: 1234,
            duration_ms,
            client,
            complete,
        };
        let records = [
            record(
                "01a23435-7c7c",
                &get,
                "/v2/prj/app/manifests/v1",
                2.146498,
                client,
                true,
            ),
            record(
                "quote\"back\\slash",
                &get,
                "/v2/p/ü/tab\there\u{1}",
                0.1 + 0.2,
                v6,
                false,
            ),
            record("", &odd, "/", f64::NAN, client, true),
            record("big", &get, "/x", 1e21, client, true),
            record("tiny", &get, "/x", 1.5e-7, client, true),
            Record {
                status: 599,
                bytes_in: u64::MAX,
                bytes_out: 0,
                op: "api",
                ..record("max", &get, "/api", 0.0, client, false)
            },
        ];
        let generic = generic_lines(|| {
            for r in &records {
                r.write(&Sink::Events);
            }
        });
        assert_eq!(generic.len(), records.len(), "{generic:?}");
        for (r, g) in records.iter().zip(&generic) {
            let ours = r.json(chrono::Utc::now());
            assert!(ours.ends_with("}\n"), "{ours}");
            assert_eq!(ours.matches('\n').count(), 1, "one line: {ours}");
            assert_eq!(untimed(ours.trim_end()), untimed(g));
        }
    }

    /// What a [`LineOutput`] was given.
    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl LineOutput for Lines {
        fn write_access_line(&self, line: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8(line.to_vec()).unwrap());
        }
    }

    #[test]
    fn the_json_sink_gets_whole_lines_and_no_event() {
        let lines = Arc::new(Lines::default());
        let sink = Sink::Json(lines.clone());
        let client: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r = Record {
            request_id: "r1",
            op: "tags_list",
            method: &http::Method::GET,
            path: "/v2/p/a/tags/list",
            status: 200,
            bytes_in: 0,
            bytes_out: 10,
            duration_ms: 1.5,
            client,
            complete: true,
        };
        let events = generic_lines(|| r.write(&sink));
        assert!(events.is_empty(), "no tracing event: {events:?}");
        let got = lines.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(v["path"], "/v2/p/a/tags/list");
        assert_eq!(v["target"], TARGET);
    }

    #[test]
    fn escaping_is_found_wherever_it_is_needed() {
        let naive = |b: &[u8]| b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\');
        // every length up to three words, the byte at every position, every byte value
        for len in 0..24 {
            for pos in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[pos] = c;
                    assert_eq!(needs_escape(&b), naive(&b), "{b:?}");
                }
            }
        }
        // neighbours of the tested values, and UTF-8 (bytes ≥ 0x80) around them
        for s in [
            "/v2/ü/é\u{7f}",
            "\u{1f}x",
            " !#[]",
            "ab\"",
            "/v2/p/a/manifests/sha256:\\",
        ] {
            assert_eq!(needs_escape(s.as_bytes()), naive(s.as_bytes()), "{s:?}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "127.0.0.1:51934",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:8080",
            "[fe80::1%2]:1",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut s = String::new();
            socket_addr(&mut s, a);
            assert_eq!(s, a.to_string());
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.000678Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut s = String::new();
        timestamp(&mut s, t);
        assert_eq!(s, "2026-01-02T03:04:05.000678Z");
        let t = chrono::DateTime::parse_from_rfc3339("1999-12-31T23:59:59.999999999Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        s.clear();
        timestamp(&mut s, t);
        assert_eq!(s, "1999-12-31T23:59:59.999999Z");
    }
}
