//! Logs: one JSON object a line on stdout in Cloud Logging's structured
//! shape (tracing-stackdriver), or readable text with `DEBUG=true`.
//! `RUST_LOG` overrides the level filter either way.
//!
//! Trace correlation without OpenTelemetry: the runtime records the
//! `logging.googleapis.com/trace` (+ `spanId`, `trace_sampled`) fields on each
//! request's span. tracing-stackdriver nests span fields under `span`/`spans`
//! (and camelCases top-level event fields with dots), where Cloud Logging
//! does not look, so the writer below lifts those three keys to the top level
//! of every line logged inside a request. Lines outside a request are passed
//! through untouched.
//!
//! Never log headers wholesale or bodies: Authorization and
//! X-Hub-Signature-256 are credentials, payloads may carry secrets.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Once;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Cloud Logging's trace field: `projects/<project>/traces/<trace id>`.
pub(crate) const TRACE_FIELD: &str = "logging.googleapis.com/trace";
/// Cloud Logging's span field: 16 hex digits.
pub(crate) const SPAN_ID_FIELD: &str = "logging.googleapis.com/spanId";
/// Cloud Logging's sampling flag.
pub(crate) const TRACE_SAMPLED_FIELD: &str = "logging.googleapis.com/trace_sampled";

const HOISTED: [&str; 3] = [TRACE_FIELD, SPAN_ID_FIELD, TRACE_SAMPLED_FIELD];

/// The value of [`TRACE_FIELD`] for a trace of `project`.
pub(crate) fn trace_resource(project: &str, trace_id: &str) -> String {
    format!("projects/{project}/traces/{trace_id}")
}

/// Installs the global subscriber. Safe to call more than once (tests, the
/// local stack running three functions): only the first call counts, and a
/// subscriber installed by someone else is left alone.
pub fn init(debug: bool) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let result = if debug {
            let subscriber = tracing_subscriber::registry()
                .with(filter(true))
                .with(tracing_subscriber::fmt::layer().with_writer(io::stdout));
            tracing::subscriber::set_global_default(subscriber)
        } else {
            tracing::subscriber::set_global_default(json_subscriber(filter(false), io::stdout))
        };
        // Already set (by a test harness or an embedding program): keep it.
        let _ = result;
    });
}

/// Makes sure everything logged so far has reached stdout, before exit.
pub fn flush() {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
}

fn filter(debug: bool) -> EnvFilter {
    let default = if debug {
        // Our own crates verbose; the HTTP stack's chatter stays at info.
        "debug,hyper=info,hyper_util=info,h2=info,reqwest=info,rustls=info,tower=info"
    } else {
        "info"
    };
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// The JSON subscriber, writing through `make_writer` (stdout in production,
/// a buffer in tests).
fn json_subscriber<M>(filter: EnvFilter, make_writer: M) -> impl tracing::Subscriber + Send + Sync
where
    M: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_stackdriver::layer().with_writer(HoistTrace(make_writer)))
}

/// Wraps a writer so that each JSON line gets the trace keys of its
/// innermost span at the top level.
struct HoistTrace<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for HoistTrace<M> {
    type Writer = Hoisting<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Hoisting(self.0.make_writer())
    }
}

struct Hoisting<W>(W);

impl<W: Write> Write for Hoisting<W> {
    // tracing-subscriber formats each event into one buffer and hands it
    // over with a single write_all, so one call sees one whole line.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(&hoist(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// The line with the trace keys of its innermost span copied to the top
/// level; the line unchanged when there are none or it is not JSON.
fn hoist(line: &[u8]) -> Cow<'_, [u8]> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Cow::Borrowed(line);
    };
    if !text.contains(TRACE_FIELD) {
        return Cow::Borrowed(line);
    }
    let Ok(serde_json::Value::Object(mut entry)) = serde_json::from_str::<serde_json::Value>(text)
    else {
        return Cow::Borrowed(line);
    };
    // `span` is the innermost span; `spans` lists root to leaf.
    let mut candidates: Vec<&serde_json::Map<String, serde_json::Value>> = Vec::new();
    if let Some(serde_json::Value::Object(span)) = entry.get("span") {
        candidates.push(span);
    }
    if let Some(serde_json::Value::Array(spans)) = entry.get("spans") {
        candidates.extend(spans.iter().rev().filter_map(|s| s.as_object()));
    }
    let Some(source) = candidates.into_iter().find(|s| s.contains_key(TRACE_FIELD)) else {
        return Cow::Borrowed(line);
    };
    let lifted: Vec<(String, serde_json::Value)> = HOISTED
        .iter()
        .filter_map(|k| source.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    for (k, v) in lifted {
        entry.entry(k).or_insert(v);
    }
    match serde_json::to_vec(&entry) {
        Ok(mut out) => {
            out.push(b'\n');
            Cow::Owned(out)
        }
        Err(_) => Cow::Borrowed(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn lines(c: &Capture) -> Vec<serde_json::Value> {
        let bytes = c.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn request_lines_carry_the_trace_at_the_top_level() {
        let capture = Capture::default();
        let subscriber = json_subscriber(EnvFilter::new("info"), capture.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before any request");
            let span = tracing::info_span!(
                "request",
                request_id = "r1",
                "logging.googleapis.com/trace" = tracing::field::Empty,
                "logging.googleapis.com/spanId" = tracing::field::Empty,
            );
            span.record(TRACE_FIELD, trace_resource("p1", "abc").as_str());
            span.record(SPAN_ID_FIELD, "00f067aa0ba902b7");
            let _g = span.enter();
            let inner = tracing::info_span!("decode");
            let _g2 = inner.enter();
            tracing::warn!(status = 400, "bad input");
        });
        let got = lines(&capture);
        assert_eq!(got.len(), 2);
        assert!(got[0].get(TRACE_FIELD).is_none());
        assert_eq!(got[0]["message"], "before any request");
        assert_eq!(got[1][TRACE_FIELD], "projects/p1/traces/abc");
        assert_eq!(got[1][SPAN_ID_FIELD], "00f067aa0ba902b7");
        assert_eq!(got[1]["severity"], "WARNING");
        assert_eq!(got[1]["message"], "bad input");
    }

    #[test]
    fn non_json_and_untraced_lines_pass_through() {
        assert_eq!(&*hoist(b"plain text\n"), b"plain text\n");
        let odd = format!("{{\"{TRACE_FIELD}\": not json\n");
        assert_eq!(&*hoist(odd.as_bytes()), odd.as_bytes());
        let top = format!("{{\"{TRACE_FIELD}\":\"x\",\"span\":{{\"{TRACE_FIELD}\":\"y\"}}}}");
        let out: serde_json::Value = serde_json::from_slice(&hoist(top.as_bytes())).unwrap();
        assert_eq!(out[TRACE_FIELD], "x", "an explicit top-level value wins");
    }

    #[test]
    fn init_twice_is_harmless() {
        init(false);
        init(true);
        tracing::info!("still logging");
    }
}
