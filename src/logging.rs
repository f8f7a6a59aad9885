//! The server's log output: lines are appended to a memory buffer on the request path and
//! written to stderr by a background thread, in batches.
//!
//! Why: with one `write(2)` per line, logging a review cost about a third of the server's CPU per
//! request (BENCHMARKS.md), and a log pipe that stops draining (a stuck container runtime, a
//! full disk behind it) would block the threads answering the API server. Here a request only
//! takes a lock and copies its line. When the sink falls behind and the buffer is full, new lines
//! are dropped and counted, and a notice saying how many goes out with the next batch.
//!
//! Also [`EscapedFields`], the field formatting of the text format: it escapes control
//! characters, so that no value a request controls can start a line of its own.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

/// How long lines may wait in the buffer, at most, before they are written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered bytes that start a write without waiting for the interval.
const FLUSH_AT: usize = 64 * 1024;
/// Buffered bytes beyond which new lines are dropped.
pub const DEFAULT_CAPACITY: usize = 4 * 1024 * 1024;

/// Lines dropped by every buffer of this process (the metric `rwop_guard_log_lines_dropped_total`).
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Lines dropped so far by all log buffers of this process.
pub fn dropped_total() -> u64 {
    DROPPED_TOTAL.load(Ordering::Relaxed)
}

/// Hands out writers for `tracing_subscriber::fmt`; one event is one `write_all`.
#[derive(Clone)]
pub struct LogBuffer {
    shared: Arc<Shared>,
}

/// Keeps the writer thread running; dropping it writes what is left and stops the thread.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    capacity: usize,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    stopping: bool,
}

impl LogBuffer {
    /// Starts the thread that writes to `sink` (stderr in the server).
    pub fn start(
        sink: impl Write + Send + 'static,
        capacity: usize,
    ) -> io::Result<(LogBuffer, FlushGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || shared.write_batches(sink))?
        };
        Ok((
            LogBuffer {
                shared: shared.clone(),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind; keep logging.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, line: &[u8]) {
        let mut state = self.lock();
        if state.lines.len() + line.len() > self.capacity {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(line);
        // One wake-up per batch, not per line: the writer waits for more once woken.
        if was_empty || state.lines.len() >= FLUSH_AT {
            self.wake.notify_one();
        }
    }

    fn write_batches(&self, mut sink: impl Write) {
        let mut batch = Vec::new();
        let mut reported = 0;
        loop {
            let mut state = self.lock();
            while state.lines.is_empty() && !state.stopping {
                state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.lines.len() < FLUSH_AT && !state.stopping {
                state = self
                    .wake
                    .wait_timeout(state, FLUSH_INTERVAL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut batch, &mut state.lines);
            let stopping = state.stopping;
            drop(state);
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > reported {
                batch.extend_from_slice(
                    format!(
                        "rwop-guard: {} log lines dropped: stderr did not keep up\n",
                        dropped - reported
                    )
                    .as_bytes(),
                );
                reported = dropped;
            }
            // Nowhere to report a failed write to; the lines are lost either way.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
            if stopping && self.lock().lines.is_empty() {
                return;
            }
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Appends to the buffer; never blocks on the sink.
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
        }
    }
}

/// tracing-subscriber's field formatting for the text format, with every control character
/// in names, values and messages escaped: `\n` is written as the two characters `\` `n`, ESC as
/// `\x1b`. A uid or a name with a newline in it cannot end the line and forge the next one, nor
/// drive a terminal. (tracing-subscriber escapes ANSI sequences itself, but not line breaks; the
/// JSON format escapes everything already.)
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut escaped = EscapeControls(writer);
        <DefaultFields as FormatFields<'_>>::format_fields(
            &self.0,
            Writer::new(&mut escaped),
            fields,
        )
    }
}

struct EscapeControls<'a>(Writer<'a>);

impl fmt::Write for EscapeControls<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in s.char_indices().filter(|(_, c)| c.is_control()) {
            self.0.write_str(&s[plain..i])?;
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(self.0, "\\x{:02x}", c as u32)?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn text_fields_escape_control_characters() {
        let (tx, rx) = mpsc::channel();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(Channel(tx)))
            .with_ansi(false)
            .fmt_fields(EscapedFields::default())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                name = %"a\nINFO forged line\x1b[31m\r\t\u{85}é",
                uid = "b\nc",
                "review \n{}", "d\ne"
            );
        });
        let line = String::from_utf8(rx.try_iter().flatten().collect()).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with('\n'));
        assert!(
            line.contains(
                r#"review \nd\ne name=a\nINFO forged line\x1b[31m\r\t\u{85}é uid="b\nc""#
            ),
            "{line}"
        );
    }

    /// A sink that hands every write to the test.
    struct Channel(mpsc::Sender<Vec<u8>>);

    impl Write for Channel {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn write_line(logs: &LogBuffer, line: &str) {
        logs.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_the_rest() {
        let (tx, rx) = mpsc::channel();
        let (logs, guard) = LogBuffer::start(Channel(tx), DEFAULT_CAPACITY).unwrap();
        let lines: Vec<String> = (0..2000).map(|i| format!("line {i}\n")).collect();
        for line in &lines {
            write_line(&logs, line);
        }
        drop(guard);
        let written: Vec<u8> = rx.iter().flatten().collect();
        assert_eq!(String::from_utf8(written).unwrap(), lines.concat());
        assert_eq!(logs.dropped(), 0);
    }

    /// A sink that says when a write starts, then blocks until the test opens the gate.
    struct Gated {
        entered: mpsc::Sender<()>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        out: mpsc::Sender<Vec<u8>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            let _ = self.out.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_never_blocks_a_writer_and_drops_are_reported() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (entered_tx, entered) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let sink = Gated {
            entered: entered_tx,
            gate: gate.clone(),
            out: tx,
        };
        let (logs, guard) = LogBuffer::start(sink, 100).unwrap();
        write_line(&logs, "first 789\n");
        // The writer thread is now stuck in the sink with that line, the buffer empty.
        entered.recv().unwrap();
        // 10 lines of 10 bytes fill the buffer, the other 990 are dropped; no call blocks.
        for i in 0..1000 {
            write_line(&logs, &format!("line {i:04}\n"));
        }
        assert_eq!(logs.dropped(), 990);
        // Other tests may drop lines too; the process-wide total counts these at least.
        assert!(dropped_total() >= 990);
        let metrics = crate::server::Metrics::new();
        let exposed = metrics.encode();
        let line = exposed
            .lines()
            .find(|l| l.starts_with("rwop_guard_log_lines_dropped_total "))
            .unwrap_or_else(|| panic!("{exposed}"));
        let value: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 990, "{line}");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(rx.iter().flatten().collect()).unwrap();
        let kept: String = (0..10).map(|i| format!("line {i:04}\n")).collect();
        assert_eq!(
            text,
            format!("first 789\n{kept}rwop-guard: 990 log lines dropped: stderr did not keep up\n")
        );
    }
}
