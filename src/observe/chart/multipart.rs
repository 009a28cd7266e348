//! The multipart form of a chart upload: boundary, fields, `Content-Disposition` parameters
//! (CRLF and LF-only bodies, as ChartMuseum's parser accepts them).

use super::archive::ChartError;

/// The multipart field ChartMuseum reads the chart from.
pub const CHART_FIELD: &str = "chart";

pub(super) fn is_multipart(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// The boundary of a `multipart/form-data` content type.
pub fn multipart_boundary(content_type: &str) -> Option<String> {
    if !is_multipart(content_type) {
        return None;
    }
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty() && v.len() <= 200).then(|| v.to_string())
    })
}

/// The content of the first file part named `field` of a `multipart/form-data` body (CRLF or
/// bare LF line endings, like Go's reader that ChartMuseum uses). As for Go's `FormFile`, which
/// ChartMuseum reads the chart with, only a `form-data` part with a non-empty `filename` is a
/// file: a plain field of the same name before it is skipped, so wharf reads the chart
/// ChartMuseum stores, not a decoy.
pub fn multipart_field<'a>(
    body: &'a [u8],
    boundary: &str,
    field: &str,
) -> Result<&'a [u8], ChartError> {
    let dash = format!("--{boundary}").into_bytes();
    // the first delimiter: at the very start, or after a preamble line
    let mut pos = if body.starts_with(&dash) {
        0
    } else {
        let mut nl_dash = b"\n".to_vec();
        nl_dash.extend_from_slice(&dash);
        find(body, &nl_dash, 0).ok_or(ChartError::Multipart("no boundary line"))? + 1
    };
    // the line ending in use, from the first boundary line
    let after_first = pos + dash.len();
    let line_end = skip_padding(body, after_first);
    let nl: &[u8] = if body[line_end..].starts_with(b"\r\n") {
        b"\r\n"
    } else {
        b"\n"
    };
    let mut delim = nl.to_vec();
    delim.extend_from_slice(&dash);
    let mut head_end = nl.to_vec();
    head_end.extend_from_slice(nl);
    loop {
        let after = pos + dash.len();
        if body[after..].starts_with(b"--") {
            return Err(ChartError::NoChartField);
        }
        let line = skip_padding(body, after);
        if !body[line..].starts_with(nl) {
            return Err(ChartError::Multipart("bad boundary line"));
        }
        let headers_start = line + nl.len();
        // a part without headers starts right away with the empty line
        let (headers, content_start) = if body[headers_start..].starts_with(nl) {
            (
                &body[headers_start..headers_start],
                headers_start + nl.len(),
            )
        } else {
            let end = find(body, &head_end, headers_start)
                .ok_or(ChartError::Multipart("part headers not terminated"))?;
            (&body[headers_start..end], end + head_end.len())
        };
        let content_end = find(body, &delim, content_start)
            .ok_or(ChartError::Multipart("part not terminated"))?;
        if file_part_name(headers, nl).as_deref() == Some(field) {
            return Ok(&body[content_start..content_end]);
        }
        pos = content_end + nl.len();
    }
}

pub(super) fn skip_padding(body: &[u8], mut i: usize) -> usize {
    while i < body.len() && (body[i] == b' ' || body[i] == b'\t') {
        i += 1;
    }
    i
}

/// The `name` of a file part: its `Content-Disposition` is `form-data` with a `name` and a
/// non-empty `filename` (Go's `Part.FormName` and `FileName`); `None` for anything else.
pub(super) fn file_part_name(headers: &[u8], nl: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    let sep = if nl == b"\r\n" { "\r\n" } else { "\n" };
    text.split(sep).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        let kind = v.split(';').next().unwrap_or_default().trim();
        if !kind.eq_ignore_ascii_case("form-data") {
            return None;
        }
        disposition_param(v, "filename").filter(|f| !f.is_empty())?;
        disposition_param(v, "name")
    })
}

/// A parameter of a `Content-Disposition` value (token or quoted string).
pub fn disposition_param(value: &str, param: &str) -> Option<String> {
    let mut rest = value.split_once(';')?.1;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return None;
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        rest = rest[eq + 1..].trim_start();
        let val;
        if let Some(q) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => out.push(c),
                }
            }
            let end = end?;
            val = out;
            rest = &q[end + 1..];
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            val = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        if key.eq_ignore_ascii_case(param) {
            return Some(val);
        }
    }
}

/// The first index of `needle` in `hay` at or after `from` (`memchr`'s two-way search: linear
/// time whatever the body holds).
pub(super) fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    let rest = hay.get(from..)?;
    memchr::memmem::find(rest, needle).map(|i| i + from)
}

// ---------------------------------------------------------------------------------------------
// download
