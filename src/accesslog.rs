//! The JSON access-log line (`log.format: json`), formatted by wharf itself.
//!
//! One line per request is the busiest log output there is; through `tracing-subscriber`'s
//! generic JSON formatter it cost ~23,000 instructions per request (a serde map serializer
//! behind dynamic field visits, `fmt` machinery, escaping every string byte by byte), an eighth
//! of a proxied manifest GET with its pull event. [`Json`] writes the events of target
//! [`TARGET`] directly — the same keys in the same order, the same value formatting, the same
//! line — and hands every other event to the generic formatter, unchanged. The test below
//! compares both formatters' output for the same events.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of access-log events.
pub const TARGET: &str = "wharf::access";

/// A JSON event formatter: access-log events written directly, others by `inner` (the
/// `tracing-subscriber` JSON formatter, flattened).
pub struct Json<F> {
    inner: F,
}

impl<F> Json<F> {
    pub fn new(inner: F) -> Self {
        Json { inner }
    }
}

impl<S, N, F> FormatEvent<S, N> for Json<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // inside a span the generic formatter adds the span fields: leave those lines to it
        if meta.target() != TARGET || ctx.lookup_current().is_some() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(384);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line, chrono::Utc::now());
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        let mut fields = Fields {
            line: &mut line,
            scratch: String::new(),
        };
        event.record(&mut fields);
        line.push_str(",\"target\":");
        string(&mut line, meta.target());
        line.push_str("}\n");
        writer.write_str(&line)
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
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
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

/// Writes each field as `,"name":value`, formatted as `tracing-serde` does: strings and
/// `Debug`/`Display` values as JSON strings, integers and booleans as they are, floats as
/// serde_json writes them (`null` when not finite).
struct Fields<'a> {
    line: &'a mut String,
    scratch: String,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(',');
        string(self.line, field.name());
        self.line.push(':');
    }

    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        self.key(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }
}

impl Visit for Fields<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // serde_json's own float format (`1e+21`, `null` when not finite)
        match serde_json::to_string(&value) {
            Ok(n) => self.line.push_str(&n),
            Err(_) => self.line.push_str("null"),
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.integer(field, value);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.integer(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line.push_str(if value { "true" } else { "false" });
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        string(self.line, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        string(self.line, &self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};

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

    /// The lines `emit` logs through the generic JSON formatter (`ours == false`) or [`Json`].
    fn lines(ours: bool, emit: impl Fn()) -> Vec<String> {
        let out = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(out.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .json()
            .flatten_event(true);
        if ours {
            let subscriber = builder.map_event_format(Json::new).finish();
            tracing::subscriber::with_default(subscriber, &emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), &emit);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    /// A line without its timestamp (the two formatters run at different instants).
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

    fn access(rid: &str, path: &str, client: std::net::SocketAddr, ms: f64, complete: bool) {
        let method = http::Method::GET;
        let op = "manifest_get";
        tracing::info!(
            target: "wharf::access",
            request_id = %rid,
            op,
            method = %method,
            path = %path,
            status = 200u16,
            bytes_in = 0u64,
            bytes_out = 1234u64,
            duration_ms = ms,
            client = %client,
            complete,
        );
    }

    #[test]
    fn access_lines_are_those_of_the_generic_formatter() {
        let client: std::net::SocketAddr = "127.0.0.1:51934".parse().unwrap();
        let emit = || {
            access(
                "01a23435-7c7c",
                "/v2/prj/app/manifests/v1",
                client,
                2.146498,
                true,
            );
            access(
                "quote\"back\\slash",
                "/v2/p/ü/tab\there\u{1}",
                client,
                0.1 + 0.2,
                false,
            );
            access("", "/", client, f64::NAN, true);
            access("big", "/x", client, 1e21, true);
            access("tiny", "/x", client, 1.5e-7, true);
            // not access lines: left to the generic formatter
            tracing::warn!(target: "wharf::other", error = %"boom", n = 3, "something \"happened\"");
            tracing::info!(target: "wharf::access", "a message on the access target");
        };
        let generic = lines(false, emit);
        let ours = lines(true, emit);
        assert_eq!(generic.len(), 7, "{generic:?}");
        assert_eq!(ours.len(), generic.len(), "{ours:?}");
        for (g, o) in generic.iter().zip(&ours) {
            assert_eq!(untimed(o), untimed(g));
        }
        // and the line really is one JSON object ending the line
        let mut sink = Vec::new();
        writeln!(sink, "{}", ours[0]).unwrap();
        assert!(sink.ends_with(b"}\n"));
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
