//! The incoming request's trace identity, from W3C `traceparent` (preferred,
//! as Google recommends) or the older `X-Cloud-Trace-Context`.

use http::HeaderMap;

use super::TraceContext;

/// The trace of a request, or None when neither header is usable. A bad
/// header is ignored rather than refused: tracing must never fail a call.
pub fn from_headers(headers: &HeaderMap) -> Option<TraceContext> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("traceparent")
        .and_then(parse_traceparent)
        .or_else(|| header("x-cloud-trace-context").and_then(parse_cloud_trace_context))
}

/// `00-<32 hex trace>-<16 hex parent>-<2 hex flags>`.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let span_id = parts.next()?;
    let flags = parts.next()?;
    // Version 00 has exactly four parts; later versions may append more.
    if version.len() != 2 || !is_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if trace_id.len() != 32 || !is_hex(trace_id) || is_zero(trace_id) {
        return None;
    }
    if span_id.len() != 16 || !is_hex(span_id) || is_zero(span_id) {
        return None;
    }
    if flags.len() != 2 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(TraceContext {
        trace_id: trace_id.to_ascii_lowercase(),
        span_id: Some(span_id.to_ascii_lowercase()),
        sampled: flags & 1 == 1,
    })
}

/// `TRACE_ID/SPAN_ID;o=OPTIONS`, the span id in decimal; span and options
/// are optional. The span id is returned as 16 hex digits, like traceparent's.
pub fn parse_cloud_trace_context(value: &str) -> Option<TraceContext> {
    let (ids, options) = match value.trim().split_once(';') {
        Some((ids, options)) => (ids, Some(options)),
        None => (value.trim(), None),
    };
    let (trace_id, span) = match ids.split_once('/') {
        Some((t, s)) => (t, Some(s)),
        None => (ids, None),
    };
    if trace_id.len() != 32 || !is_hex(trace_id) || is_zero(trace_id) {
        return None;
    }
    let span_id = span
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s != 0)
        .map(|s| format!("{s:016x}"));
    let sampled = options
        .and_then(|o| o.trim().strip_prefix("o="))
        .and_then(|o| o.parse::<u8>().ok())
        .is_some_and(|o| o & 1 == 1);
    Some(TraceContext {
        trace_id: trace_id.to_ascii_lowercase(),
        span_id,
        sampled,
    })
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn traceparent_parses_and_rejects_garbage() {
        let t = parse_traceparent(&format!("00-{TRACE}-00f067aa0ba902b7-01")).unwrap();
        assert_eq!(t.trace_id, TRACE);
        assert_eq!(t.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert!(t.sampled);
        let t = parse_traceparent(&format!("00-{TRACE}-00f067aa0ba902b7-00")).unwrap();
        assert!(!t.sampled);
        for bad in [
            "",
            "00-abc-00f067aa0ba902b7-01",
            &format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            &format!("00-{TRACE}-0000000000000000-01"),
            &format!("ff-{TRACE}-00f067aa0ba902b7-01"),
            &format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            &format!("00-{TRACE}-00f067aa0ba902b7-zz"),
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn cloud_trace_context_parses_with_and_without_parts() {
        let t = parse_cloud_trace_context(&format!("{TRACE}/1;o=1")).unwrap();
        assert_eq!(t.trace_id, TRACE);
        assert_eq!(t.span_id.as_deref(), Some("0000000000000001"));
        assert!(t.sampled);
        let t = parse_cloud_trace_context(TRACE).unwrap();
        assert_eq!(t.span_id, None);
        assert!(!t.sampled);
        assert_eq!(parse_cloud_trace_context("nothex/1;o=1"), None);
    }

    #[test]
    fn traceparent_wins_and_bad_one_falls_back() {
        let other = "0123456789abcdef0123456789abcdef";
        let mut h = HeaderMap::new();
        h.insert(
            "x-cloud-trace-context",
            HeaderValue::from_str(&format!("{other}/5;o=1")).unwrap(),
        );
        assert_eq!(from_headers(&h).unwrap().trace_id, other);
        h.insert(
            "traceparent",
            HeaderValue::from_str(&format!("00-{TRACE}-00f067aa0ba902b7-01")).unwrap(),
        );
        assert_eq!(from_headers(&h).unwrap().trace_id, TRACE);
        h.insert("traceparent", HeaderValue::from_static("garbage"));
        assert_eq!(from_headers(&h).unwrap().trace_id, other);
        assert_eq!(from_headers(&HeaderMap::new()), None);
    }
}
