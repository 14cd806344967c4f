//! Input framing shared by the fuzz targets. Each target reads its bytes in
//! a plain-text shape (HTTP-like headers, `key=value` lines, separated
//! records) so that seed inputs can be written by hand and read in a diff,
//! and so a crash artifact is readable as-is.

/// Splits `data` at the first blank line (`\n\n`, or `\r\n\r\n`): header
/// lines `name: value` before it, the body after. Without a blank line the
/// whole input is headers and the body is empty. Lines without a colon are
/// skipped; the value loses one leading space, as in HTTP.
pub fn split_head(data: &[u8]) -> (Vec<(&[u8], &[u8])>, &[u8]) {
    let (head, body) = match find(data, b"\r\n\r\n") {
        Some(i) if find(data, b"\n\n").is_none_or(|j| i < j) => (&data[..i], &data[i + 4..]),
        _ => match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &data[data.len()..]),
        },
    };
    let mut fields = Vec::new();
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = &line[colon + 1..];
        let value = value.strip_prefix(b" ").unwrap_or(value);
        fields.push((&line[..colon], value));
    }
    (fields, body)
}

/// `key=value` lines (split at the first `=`) as owned text; lines without
/// `=` are skipped, invalid UTF-8 is replaced.
pub fn key_values(data: &[u8]) -> Vec<(String, String)> {
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let eq = line.iter().position(|b| *b == b'=')?;
            Some((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ))
        })
        .collect()
}

/// Records separated by a line holding only `---`.
pub fn records(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match find(rest, b"\n---\n") {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 5..];
            }
            None => {
                out.push(rest);
                return out;
            }
        }
    }
}

/// The first line (without its newline) and everything after it.
pub fn first_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_and_body() {
        let (h, b) = split_head(b"a: 1\nb:2\nnocolon\n\n{\"x\":1}\n\nmore");
        assert_eq!(h, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"2"[..])]);
        assert_eq!(b, b"{\"x\":1}\n\nmore");
        let (h, b) = split_head(b"a: 1\r\n\r\nbody");
        assert_eq!(h, vec![(&b"a"[..], &b"1"[..])]);
        assert_eq!(b, b"body");
        let (h, b) = split_head(b"only: head");
        assert_eq!(h.len(), 1);
        assert!(b.is_empty());
    }

    #[test]
    fn framing() {
        assert_eq!(records(b"a\n---\nb\n---\n"), vec![&b"a"[..], b"b", b""]);
        assert_eq!(
            key_values(b"k=v=w\nnone\n=x"),
            vec![("k".into(), "v=w".into()), ("".into(), "x".into())]
        );
        assert_eq!(
            first_line(b"one\ntwo\nthree"),
            (&b"one"[..], &b"two\nthree"[..])
        );
    }
}
