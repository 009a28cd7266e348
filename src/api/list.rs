//! Harbor's list conventions, for every list the API returns: `page` (default 1; 0 or less
//! reads as 1) and `page_size` (default 10, at most 100; 0 or less: every row, no `Link`),
//! `q` and `sort` (see [`super::query`]), the answer's `X-Total-Count` (all matches) and `Link`
//! with `rel="prev"` / `rel="next"`: relative URLs, the request's own path with every query
//! parameter kept, `page`/`page_size` set, keys sorted, values decoded as Harbor writes them.
//!
//! A malformed `q` is 400 BAD_REQUEST; a `page` or `page_size` that is not an int64, or a
//! `page_size` over 100, is 422 UNPROCESSABLE_ENTITY with go-swagger's `validation failure
//! list` message, as Harbor answers.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, Uri};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Serialize;

use super::ApiError;
use super::query::{Field, Query, Record, Sort};

/// Largest `page_size` (Harbor's swagger maximum).
pub const MAX_PAGE_SIZE: i64 = 100;
/// `page_size` when none is given.
pub const DEFAULT_PAGE_SIZE: i64 = 10;

/// What a list request asks for.
#[derive(Debug, Clone)]
pub struct ListParams {
    pub query: Query,
    pub sort: Sort,
    /// 1-based.
    pub page: u64,
    /// `None`: every row (page_size ≤ 0).
    pub page_size: Option<u64>,
    path: String,
    /// Every query parameter as sent (decoded), for `Link`.
    params: Vec<(String, String)>,
    /// Answer a `Link` (not for a list's older `limit`: its pages are no Harbor pages).
    links: bool,
}

fn unprocessable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "UNPROCESSABLE_ENTITY",
        format!("validation failure list:\n{message}"),
    )
}

fn int_param(params: &[(String, String)], key: &str) -> Result<Option<i64>, ApiError> {
    match params.iter().find(|(k, _)| k == key) {
        None => Ok(None),
        Some((_, v)) if v.is_empty() => Ok(None),
        Some((_, v)) => v
            .parse::<i64>()
            .map(Some)
            .map_err(|_| unprocessable(format!("{key} in query must be of type int64: {v:?}"))),
    }
}

impl ListParams {
    /// Read `page`, `page_size`, `q` and `sort` from the request's URI.
    pub fn from_uri(uri: &Uri) -> Result<ListParams, ApiError> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let page = int_param(&params, "page")?.unwrap_or(1).max(1) as u64;
        let size = int_param(&params, "page_size")?.unwrap_or(DEFAULT_PAGE_SIZE);
        if size > MAX_PAGE_SIZE {
            return Err(unprocessable(format!(
                "page_size in query should be less than or equal to {MAX_PAGE_SIZE}"
            )));
        }
        let query = Query::parse(get("q").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let sort = Sort::parse(get("sort").unwrap_or(""));
        Ok(ListParams {
            query,
            sort,
            page,
            page_size: (size > 0).then_some(size as u64),
            path: uri.path().to_string(),
            params,
            links: true,
        })
    }

    /// The same request with another `q` (a list that turns its own parameters into terms).
    pub fn with_query(&self, query: Query) -> ListParams {
        ListParams {
            query,
            ..self.clone()
        }
    }

    /// The same request with a page size of its own (a list's older `limit`, beyond
    /// [`MAX_PAGE_SIZE`]): answered without `Link`.
    pub fn with_page_size(&self, size: u64) -> ListParams {
        ListParams {
            page_size: Some(size),
            links: false,
            ..self.clone()
        }
    }

    /// The value of another query parameter (`name`, `policy_id`, …), if sent and not empty.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Rows to skip (saturating: a page far past the end is simply empty).
    pub fn offset(&self) -> u64 {
        match self.page_size {
            Some(size) => (self.page - 1).saturating_mul(size),
            None => 0,
        }
    }

    /// Rows of one page (`None`: all).
    pub fn limit(&self) -> Option<u64> {
        self.page_size
    }

    /// `offset` and `limit` as SQL integers (an unlimited page is `i64::MAX` rows).
    pub fn sql_window(&self) -> (i64, i64) {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        (clamp(self.offset()), self.limit().map_or(i64::MAX, clamp))
    }

    /// Filter `items` by `q` on `fields`, order them (by `sort`, else keep their order — the
    /// list's default), and cut this page; with the number of matches.
    pub fn apply<T: Record>(&self, items: Vec<T>, fields: &[Field]) -> (Vec<T>, u64) {
        let mut items: Vec<T> = items
            .into_iter()
            .filter(|r| self.query.matches(r, fields))
            .collect();
        if self.sort.applies(fields) {
            // stable: ties keep the default order
            items.sort_by(|a, b| self.sort.compare(a, b, fields));
        }
        let total = items.len() as u64;
        let skip = usize::try_from(self.offset()).unwrap_or(usize::MAX);
        let take = self
            .limit()
            .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
        (items.into_iter().skip(skip).take(take).collect(), total)
    }

    /// The `Link` header for `total` matches, if any applies.
    pub fn link(&self, total: u64) -> Option<String> {
        let size = self.page_size.filter(|_| self.links)?;
        let mut links = Vec::new();
        if self.page > 1 && (self.page - 1).saturating_mul(size) < total {
            links.push(format!(
                "<{}>; rel=\"prev\"",
                self.url_for(self.page - 1, size)
            ));
        }
        if self.page.saturating_mul(size) < total {
            links.push(format!(
                "<{}>; rel=\"next\"",
                self.url_for(self.page + 1, size)
            ));
        }
        (!links.is_empty()).then(|| links.join(" , "))
    }

    fn url_for(&self, page: u64, size: u64) -> String {
        let mut params: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(k, _)| k != "page" && k != "page_size")
            .cloned()
            .collect();
        params.push(("page".into(), page.to_string()));
        params.push(("page_size".into(), size.to_string()));
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        format!("{}?{}", self.path, query.join("&"))
    }

    /// The answer: `body` as JSON with `X-Total-Count` and `Link`.
    pub fn respond<T: Serialize>(&self, body: &T, total: u64) -> Response {
        let mut resp = axum::Json(body).into_response();
        let h = resp.headers_mut();
        h.insert("x-total-count", HeaderValue::from(total));
        if let Some(link) = self
            .link(total)
            .and_then(|l| HeaderValue::from_str(&l).ok())
        {
            h.insert(http::header::LINK, link);
        }
        resp
    }
}

/// Characters escaped in `Link` URLs: Harbor writes the query decoded; only what would change
/// its meaning (or is not allowed in a header) is escaped.
const LINK_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'`');

fn escape(s: &str) -> String {
    utf8_percent_encode(s, LINK_ESCAPE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(uri: &str) -> Result<ListParams, ApiError> {
        ListParams::from_uri(&uri.parse::<Uri>().unwrap())
    }

    #[test]
    fn defaults_and_limits_are_harbors() {
        let p = params("/api/v2.0/projects").unwrap();
        assert_eq!((p.page, p.page_size, p.offset()), (1, Some(10), 0));
        let p = params("/x?page=0&page_size=0").unwrap();
        assert_eq!((p.page, p.page_size), (1, None));
        assert_eq!(p.link(1000), None);
        let p = params("/x?page=-3&page_size=-1").unwrap();
        assert_eq!((p.page, p.page_size), (1, None));
        let p = params("/x?page=3&page_size=100").unwrap();
        assert_eq!((p.offset(), p.limit()), (200, Some(100)));
        let e = params("/x?page_size=101").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.message,
            "validation failure list:\npage_size in query should be less than or equal to 100"
        );
        let e = params("/x?page=abc").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.message,
            "validation failure list:\npage in query must be of type int64: \"abc\""
        );
        let e = params("/x?page=99999999999999999999").unwrap_err();
        assert_eq!(e.code, "UNPROCESSABLE_ENTITY");
        // the largest page is only far away
        let p = params("/x?page=9223372036854775807&page_size=100").unwrap();
        assert_eq!(p.sql_window(), (i64::MAX, 100));
        assert_eq!(
            p.link(5).as_deref(),
            None,
            "no prev: the previous page is past the end too"
        );
        let e = params("/x?q=name").unwrap_err();
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "BAD_REQUEST"));
    }

    #[test]
    fn link_keeps_other_parameters_sorted_and_decoded() {
        let p = params("/api/v2.0/projects?q=name%3D~team&page=2&page_size=10&with_detail=true")
            .unwrap();
        assert_eq!(
            p.link(35).as_deref(),
            Some(
                "</api/v2.0/projects?page=1&page_size=10&q=name=~team&with_detail=true>; rel=\"prev\" , \
                 </api/v2.0/projects?page=3&page_size=10&q=name=~team&with_detail=true>; rel=\"next\""
            )
        );
        // last page: prev only; first page: next only; one page: none
        assert_eq!(
            params("/p?page=4&page_size=10")
                .unwrap()
                .link(35)
                .as_deref(),
            Some("</p?page=3&page_size=10>; rel=\"prev\"")
        );
        assert_eq!(
            params("/p?page_size=1").unwrap().link(2).as_deref(),
            Some("</p?page=2&page_size=1>; rel=\"next\"")
        );
        assert_eq!(params("/p").unwrap().link(10), None);
        assert_eq!(params("/p").unwrap().link(0), None);
        // what would change the URL's meaning stays escaped
        let p = params("/p?q=name%3D%7Ba%20b%7D&x=a%26b&page_size=1").unwrap();
        assert_eq!(
            p.link(3).as_deref(),
            Some("</p?page=2&page_size=1&q=name={a%20b}&x=a%26b>; rel=\"next\"")
        );
    }

    #[test]
    fn apply_filters_sorts_and_cuts() {
        use super::super::query::{Kind, Val};
        struct N(i64);
        impl Record for N {
            fn field(&self, key: &str) -> Option<Val> {
                (key == "id").then_some(Val::Int(self.0))
            }
        }
        const F: &[Field] = &[Field::new("id", Kind::Int)];
        let all = || (1..=25).map(N).collect::<Vec<_>>();
        let (page, total) = params("/x?page=2&page_size=10&q=id=[3~]&sort=-id")
            .unwrap()
            .apply(all(), F);
        assert_eq!(total, 23);
        assert_eq!(
            page.iter().map(|n| n.0).collect::<Vec<_>>(),
            (6..=15).rev().collect::<Vec<_>>()
        );
        let (page, total) = params("/x?page=99&page_size=10").unwrap().apply(all(), F);
        assert_eq!((page.len(), total), (0, 25));
        let (page, _) = params("/x?page_size=0").unwrap().apply(all(), F);
        assert_eq!(page.len(), 25);
        // an older `limit` reads the first rows, without Link
        let limited = params("/x").unwrap().with_page_size(1000);
        assert_eq!(limited.apply(all(), F).0.len(), 25);
        assert_eq!(limited.link(5000), None);
    }
}
