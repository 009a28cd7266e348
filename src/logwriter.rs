//! Where log lines go: standard output, access-log lines gathered in a buffer.
//!
//! An access-log line is written on every request; one `write(2)` per line was one of the ~9
//! system calls of a proxied manifest GET. As nginx's `access_log … buffer= flush=`,
//! lines of target [`crate::accesslog::TARGET`] are gathered in memory (`log.buffer`, 64 KiB by
//! default) and written when the buffer is full, when `log.flush_interval` (1 s) has passed, or
//! when any other line is logged: every other line (start-up, warnings, errors, debug) is
//! written at once, after the buffered lines before it, so the output's order is the order of
//! logging. What sits in the buffer when the process is killed (`kill -9`) is lost, at most one
//! flush interval of access-log lines; a graceful stop writes it out. `log.buffer: 0` writes
//! every line as it is logged.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The log output: `out` (standard output in the binary) and the access-log lines held back.
pub struct Output<W> {
    inner: Mutex<Held<W>>,
    capacity: usize,
}

struct Held<W> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> Held<W> {
    /// Write the lines held back, if any.
    fn write_held(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl<W: Write> Output<W> {
    /// Gather up to `capacity` bytes of access-log lines before writing them (`0`: never).
    pub fn new(out: W, capacity: usize) -> Self {
        Output {
            inner: Mutex::new(Held {
                out,
                buf: Vec::with_capacity(capacity),
            }),
            capacity,
        }
    }

    /// Write `line` (one formatted event), held back if `hold` and there is room.
    pub(crate) fn write_line(&self, line: &[u8], hold: bool) -> io::Result<()> {
        let mut held = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if hold && self.capacity > 0 {
            if held.buf.len() + line.len() > self.capacity {
                held.write_held()?;
            }
            if line.len() <= self.capacity {
                held.buf.extend_from_slice(line);
                return Ok(());
            }
        } else {
            held.write_held()?;
        }
        held.out.write_all(line)
    }

    /// Write what is held back.
    pub fn flush(&self) -> io::Result<()> {
        let mut held = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        held.write_held()?;
        held.out.flush()
    }
}

impl<W: Write + Send + 'static> Output<W> {
    /// Write what is held back every `interval`, from a thread of its own, for as long as the
    /// output lives (the thread holds only a weak reference).
    pub fn flush_every(self: &Arc<Self>, interval: Duration) -> io::Result<()> {
        let weak = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("wharf-log-flush".into())
            .spawn(move || {
                loop {
                    // this thread's only job is to wake up every `interval`
                    #[allow(clippy::disallowed_methods)]
                    std::thread::sleep(interval);
                    match weak.upgrade() {
                        Some(output) => {
                            let _ = output.flush();
                        }
                        None => return,
                    }
                }
            })
            .map(drop)
    }
}

/// One event's writer: the subscriber formats an event, then writes it with one `write_all`.
pub struct LineWriter<'a, W> {
    output: &'a Output<W>,
    hold: bool,
}

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write_line(buf, self.hold)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.output.write_line(buf, self.hold)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// [`MakeWriter`] for an output shared by the subscriber and the flushing thread.
pub struct Shared<W>(pub Arc<Output<W>>);

impl<'a, W: Write + 'a> MakeWriter<'a> for Shared<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            output: &self.0,
            hold: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        LineWriter {
            output: &self.0,
            hold: meta.target() == crate::accesslog::TARGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records each `write_all` it gets, as the file or pipe would see writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn writes(&self) -> Vec<String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|w| String::from_utf8(w.clone()).unwrap())
                .collect()
        }
    }

    /// An output of `capacity` into a fresh sink.
    fn output(capacity: usize) -> (Sink, Output<Sink>) {
        let sink = Sink::default();
        (sink.clone(), Output::new(sink, capacity))
    }

    #[test]
    fn access_lines_are_held_until_another_line_keeping_the_order() {
        let (sink, out) = output(1024);
        out.write_line(b"a1\n", true).unwrap();
        out.write_line(b"a2\n", true).unwrap();
        assert!(sink.writes().is_empty(), "held back");
        out.write_line(b"warn\n", false).unwrap();
        assert_eq!(sink.writes(), ["a1\na2\n", "warn\n"]);
        out.write_line(b"a3\n", true).unwrap();
        out.flush().unwrap();
        assert_eq!(sink.writes(), ["a1\na2\n", "warn\n", "a3\n"]);
        out.flush().unwrap();
        assert_eq!(sink.writes().len(), 3, "nothing held: nothing written");
    }

    #[test]
    fn a_full_buffer_is_written_and_a_line_larger_than_it_goes_straight_out() {
        let (sink, out) = output(8);
        out.write_line(b"1234\n", true).unwrap();
        out.write_line(b"5678\n", true).unwrap(); // would not fit: the first goes out
        assert_eq!(sink.writes(), ["1234\n"]);
        out.write_line(b"0123456789\n", true).unwrap(); // larger than the buffer
        assert_eq!(sink.writes(), ["1234\n", "5678\n", "0123456789\n"]);
    }

    #[test]
    fn without_a_buffer_every_line_is_written_as_it_comes() {
        let (sink, out) = output(0);
        out.write_line(b"a1\n", true).unwrap();
        out.write_line(b"a2\n", true).unwrap();
        assert_eq!(sink.writes(), ["a1\n", "a2\n"]);
    }

    #[test]
    fn the_flushing_thread_writes_held_lines_and_ends_with_the_output() {
        let (sink, out) = output(1024);
        let out = Arc::new(out);
        out.flush_every(Duration::from_millis(5)).unwrap();
        out.write_line(b"a1\n", true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.writes().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            #[allow(clippy::disallowed_methods)] // a synchronous test's own thread
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.writes(), ["a1\n"]);
        assert_eq!(
            Arc::strong_count(&out),
            1,
            "the thread holds no strong reference"
        );
    }

    #[test]
    fn the_subscriber_holds_access_lines_only() {
        let (sink, out) = output(1024);
        let out = Arc::new(out);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(Shared(out.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "wharf::access", status = 200, "request");
            tracing::info!(target: "wharf::access", status = 404, "request");
            assert!(sink.writes().is_empty());
            tracing::warn!("something else");
        });
        let writes = sink.writes();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(writes[0].contains("status=200") && writes[0].contains("status=404"));
        assert!(writes[1].contains("something else"));
    }
}
