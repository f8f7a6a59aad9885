//! The server's log output: tracing-appender's non-blocking writer (a bounded queue and a
//! writer thread), so a request never waits on stderr; and escaping of control characters in
//! the text format, so a request cannot forge log lines.
//!
//! When stderr falls behind (a stuck container runtime, a full disk behind it) and the queue is
//! full, new lines are dropped, not waited for; `rwop_guard_log_lines_dropped_total` counts
//! them.

use std::fmt;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};

/// Lines the queue holds before new ones are dropped. Request-controlled fields are bounded
/// (`crate::bounded`), so a line stays under 4 KiB and the queue under 4 MiB; a review line is
/// about 600 bytes.
pub const QUEUED_LINES: usize = 1024;

/// The drop counter of the server's writer, once it is started.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Lines dropped so far by the server's log writer (the metric
/// `rwop_guard_log_lines_dropped_total`).
pub fn dropped_total() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}

/// Starts the writer thread for `sink` (stderr in the server). Dropping the guard writes what
/// is queued and stops the thread.
pub fn start(sink: impl std::io::Write + Send + 'static) -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(sink);
    let _ = DROPPED.set(writer.error_counter());
    (writer, guard)
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
    use std::io::{self, Write};
    use std::sync::{Arc, Condvar, Mutex, mpsc};

    use tracing_subscriber::fmt::MakeWriter;

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

    /// A sink that blocks every write until the test opens the gate.
    struct Gated(Arc<(Mutex<bool>, Condvar)>, mpsc::Sender<Vec<u8>>);

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            let _ = self.1.send(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// How long the test waits for the writes before it calls them blocked. Generous: the
    /// writes take microseconds; a writer that blocks never finishes.
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);

    #[test]
    fn a_stuck_sink_never_blocks_a_writer_and_drops_are_counted() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let open = |gate: &(Mutex<bool>, Condvar)| {
            *gate.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            gate.1.notify_all();
        };
        let (tx, rx) = mpsc::channel();
        let (writer, guard) = start(Gated(gate.clone(), tx));
        let lines = QUEUED_LINES * 3;
        // The writes run on a thread of their own, so a writer that blocks on the stuck sink
        // fails this test instead of hanging `cargo test`.
        let (done_tx, done_rx) = mpsc::channel();
        let writes = std::thread::spawn(move || {
            for i in 0..lines {
                // Returns at once although the sink writes nothing: lines queue, then drop.
                writer
                    .make_writer()
                    .write_all(format!("line {i}\n").as_bytes())
                    .unwrap();
            }
            let _ = done_tx.send(());
        });
        if done_rx.recv_timeout(PATIENCE).is_err() {
            // Let the blocked writer and the worker finish, so the guard's drop cannot hang.
            open(&gate);
            panic!(
                "a writer blocked on the stuck sink ({lines} lines not written within {PATIENCE:?})"
            );
        }
        writes.join().unwrap();
        let dropped = dropped_total();
        assert!(
            dropped >= (lines - QUEUED_LINES - 1) as u64,
            "{dropped} dropped"
        );
        open(&gate);
        drop(guard);
        let written = rx.try_iter().count();
        // Every line was either written (in order) or counted as dropped.
        assert_eq!(written as u64 + dropped, lines as u64);
    }
}
