//! `Link` headers (RFC 8288) of paginated registry answers (`/v2/_catalog`, `…/tags/list`):
//! `</v2/_catalog?last=b&n=100>; rel="next"`.
//!
//! The value comes from the registry (or anything answering in its place), so it is parsed
//! without trusting its shape: link-values are split at commas outside `<…>` and quoted
//! strings, parameters at semicolons; `rel` may be quoted and hold several space-separated
//! relation types (compared case-insensitively).

/// The target of the first link whose relation types include `next`, as written between
/// `<` and `>`; `None` when there is none or the value is malformed before it.
pub fn next(value: &str) -> Option<String> {
    for link in split_outside(value, ',') {
        let link = link.trim();
        let Some(rest) = link.strip_prefix('<') else {
            continue;
        };
        let Some(end) = rest.find('>') else {
            continue;
        };
        let (target, params) = (&rest[..end], &rest[end + 1..]);
        let is_next = split_outside(params, ';').any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            if !k.trim().eq_ignore_ascii_case("rel") {
                return false;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            v.split_ascii_whitespace()
                .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if is_next && !target.is_empty() {
            return Some(target.to_string());
        }
    }
    None
}

/// The `next` link of a response's headers (every `Link` header line counts).
pub fn next_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(next)
}

/// `s` split at `sep`, except inside `<…>` and `"…"` (with `\` escapes in quotes).
fn split_outside(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut angle, mut quoted, mut escaped) = (0, false, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' if !angle => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !angle && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links() {
        for (value, want) in [
            (
                "</v2/_catalog?last=b&n=2>; rel=\"next\"",
                Some("/v2/_catalog?last=b&n=2"),
            ),
            (
                "</v2/x/tags/list?last=a,b&n=2>; rel=next",
                Some("/v2/x/tags/list?last=a,b&n=2"),
            ),
            (
                "<https://a/prev>; rel=\"prev\", <https://a/next>; rel=\"Next\"",
                Some("https://a/next"),
            ),
            (
                "<a>; title=\"x, rel=next\"; rel=\"prev\", <b>; rel=\"last next\"",
                Some("b"),
            ),
            ("<a>; rel=\"prev\"", None),
            ("<>; rel=next", None),
            ("no brackets; rel=next", None),
            ("<unterminated; rel=next", None),
            ("", None),
            ("<a>; rel=\"ne\\\"xt\"", None),
        ] {
            assert_eq!(next(value).as_deref(), want, "{value}");
        }
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::LINK,
            http::HeaderValue::from_static("<p>; rel=prev"),
        );
        h.append(
            http::header::LINK,
            http::HeaderValue::from_static("<n>; rel=next"),
        );
        assert_eq!(next_of(&h).as_deref(), Some("n"));
        assert_eq!(next_of(&http::HeaderMap::new()), None);
    }
}
