//! How an event is kept in its row's `body`: everything but the fields that are columns of
//! the row (`id`, `type`, `project`, `repository`, `digest`, the time's milliseconds, and
//! since schema 22 the resource URL's host, by its id in `hosts`), which [`decode`] puts back
//! ([`Columns`]).
//!
//! Since schema 20 a body is *packed*: a version byte ([`PACKED`]), then a protobuf message
//! ([`Packed`]; `prost`), in a `BLOB` (SQLite) or `bytea` (PostgreSQL). Absent fields cost
//! nothing, so a pull's body is about 25 bytes (its JSON form of schemas 13–19 about 100, the
//! whole event about 500). Bodies written before still read: JSON with the short keys of
//! schemas 13–19 ([`StoredBody`], which takes the long keys too), or the whole event (a body
//! that starts with `{"id":`). A JSON body starts with `{`, which is not [`PACKED`].

use chrono::{DateTime, Utc};
use prost::Message as _;
use serde::Deserialize;

use super::super::StoreError;
use crate::events::operator::ANONYMOUS;
use crate::events::{ChartInfo, Event, EventKind, QuotaInfo, ScanInfo};

/// The first byte of a packed body (format 1: [`Packed`] follows).
const PACKED: u8 = 1;

/// Why a stored body could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("JSON body: {0}")]
    Json(#[from] serde_json::Error),
    #[error("packed body: {0}")]
    Packed(#[from] prost::DecodeError),
    #[error("packed body: field {field}: {source}")]
    Field {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("a body of no known format (first byte {0:?})")]
    Format(Option<u8>),
    #[error("no resource URL")]
    NoResourceUrl,
    #[error("occurred_at {0} out of range")]
    Time(i64),
    #[error("request id {0:?} is not a stored UUID")]
    RequestId(String),
    #[error("a client IP address of {0} bytes")]
    ClientIp(usize),
    #[error("media type code {0} is unknown")]
    MediaCode(u32),
}

/// A packed body (after [`PACKED`]). Tags 1–15 take one byte: the fields most events have
/// come first. Fields may be added under new tags; a tag is never reused.
#[derive(Clone, PartialEq, prost::Message)]
struct Packed {
    /// The operator; absent for [`ANONYMOUS`] (most pulls).
    #[prost(string, optional, tag = "1")]
    operator: Option<String>,
    #[prost(string, repeated, tag = "2")]
    tags: Vec<String>,
    /// A common manifest media type: its place in [`MEDIA_TYPES`], from 1.
    #[prost(uint32, optional, tag = "3")]
    media_code: Option<u32>,
    /// Any other media type, as it came.
    #[prost(string, optional, tag = "4")]
    media_type: Option<String>,
    #[prost(uint64, optional, tag = "5")]
    size: Option<u64>,
    /// The resource URL's host, when the rest follows from the row ([`resource_path`]).
    #[prost(string, optional, tag = "6")]
    host: Option<String>,
    /// The resource URL whole, when it does not follow from the row.
    #[prost(string, optional, tag = "7")]
    resource_url: Option<String>,
    /// A request id that is a UUID in canonical text, as its 16 bytes; empty when it is the
    /// event's own id (a pull's event takes the id wharf made for its request).
    #[prost(bytes = "vec", optional, tag = "8")]
    request_uuid: Option<Vec<u8>>,
    /// Any other request id, as it came.
    #[prost(string, optional, tag = "9")]
    request_id: Option<String>,
    #[prost(string, optional, tag = "10")]
    client_addr: Option<String>,
    #[prost(string, optional, tag = "11")]
    user_agent: Option<String>,
    #[prost(bool, tag = "12")]
    public: bool,
    #[prost(int64, optional, tag = "13")]
    repository_created: Option<i64>,
    #[prost(string, repeated, tag = "14")]
    platforms: Vec<String>,
    /// The nanoseconds of the time below the row's milliseconds (`occurred_at`).
    #[prost(uint32, tag = "15")]
    sub_ms: u32,
    /// The time whole (its JSON), only when the row's milliseconds and `sub_ms` do not give it
    /// back exactly.
    #[prost(string, optional, tag = "16")]
    occurred_at: Option<String>,
    /// Chart, scan and quota facts: their JSON (rare, and with fields of their own).
    #[prost(string, optional, tag = "17")]
    chart: Option<String>,
    #[prost(string, optional, tag = "18")]
    scan: Option<String>,
    #[prost(string, optional, tag = "19")]
    quota: Option<String>,
    #[prost(bool, tag = "20")]
    test: bool,
    /// A client address that is an IP address in its canonical text, as its 4 or 16 bytes
    /// (`client_addr` holds any other).
    #[prost(bytes = "vec", optional, tag = "21")]
    client_ip: Option<Vec<u8>>,
}

/// Manifest media types stored as a code: a packed body keeps their place in this list (from
/// 1, never reordered); a JSON body of schemas 13–19 kept the short name.
const MEDIA_TYPES: [(&str, &str); 4] = [
    ("om", "application/vnd.oci.image.manifest.v1+json"),
    ("oi", "application/vnd.oci.image.index.v1+json"),
    ("dm", "application/vnd.docker.distribution.manifest.v2+json"),
    (
        "dl",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ),
];

/// A media type from what a JSON body of schemas 13–19 stored: a media type holds a `/`; a
/// code does not; a malformed media type without `/` was kept after a `=`.
fn media_type_of_json(stored: String) -> String {
    if stored.contains('/') {
        return stored;
    }
    if let Some(raw) = stored.strip_prefix('=') {
        return raw.to_string();
    }
    MEDIA_TYPES
        .iter()
        .find(|(code, _)| *code == stored)
        .map_or(stored, |(_, t)| t.to_string())
}

/// `t`'s nanoseconds below its millisecond, when `t` is exactly the time of `ms` (unix ms, as
/// the row's `occurred_at` holds it) plus them.
fn sub_ms_of(t: &DateTime<Utc>) -> Option<u32> {
    let sub = t.timestamp_subsec_nanos() % 1_000_000;
    (time_of(t.timestamp_millis(), sub).as_ref() == Some(t)).then_some(sub)
}

/// The time of `ms` (unix ms) plus `sub` nanoseconds.
fn time_of(ms: i64, sub: u32) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)?
        .checked_add_signed(chrono::TimeDelta::nanoseconds(i64::from(sub)))
}

/// The 16 bytes of `id` when it is a UUID in canonical (lowercase, hyphenated) text.
fn request_uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let u = uuid::Uuid::try_parse(id).ok()?;
    let mut buf = uuid::Uuid::encode_buffer();
    (u.hyphenated().encode_lower(&mut buf) == id).then(|| *u.as_bytes())
}

/// The 4 or 16 bytes of `addr` when it is an IP address in its canonical text (an IPv4
/// address that parses is: the parser takes four decimal octets without leading zeros only).
fn ip_bytes(addr: &str) -> Option<Vec<u8>> {
    if let Ok(v4) = addr.parse::<std::net::Ipv4Addr>() {
        return Some(v4.octets().to_vec());
    }
    let v6: std::net::Ipv6Addr = addr.parse().ok()?;
    (v6.to_string() == addr).then(|| v6.octets().to_vec())
}

/// The text of an IP address from its 4 or 16 bytes.
fn ip_text(bytes: &[u8]) -> Option<String> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(std::net::Ipv4Addr::from(v4).to_string());
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|v6| std::net::Ipv6Addr::from(v6).to_string())
}

/// The part of an OCI resource URL after its host, as [`Event::oci_resource_url`] makes it
/// from the row's repository and digest and the event's first tag.
fn resource_path(repository: &str, tag: Option<&str>, digest: Option<&str>) -> String {
    Event::oci_resource_url("", repository, tag, digest)
}

fn encode_error(e: serde_json::Error) -> StoreError {
    StoreError::Encode(e.into())
}

/// `v`'s JSON, when there is one.
fn json_text<T: serde::Serialize>(v: &Option<T>) -> Result<Option<String>, serde_json::Error> {
    v.as_ref()
        .map(|v| serde_json::to_string(v).map(crate::store::db::json_kept))
        .transpose()
}

/// The host of `e`'s resource URL, when the rest of it follows from the row (the host is
/// then all a body or row must keep of it): what is left of the URL without
/// [`resource_path`], found without building it.
pub fn host_of(e: &Event) -> Option<&str> {
    let url = e.resource_url.as_str();
    let rest = match (e.tags.first(), e.digest.as_deref()) {
        (Some(t), _) => url.strip_suffix(t.as_str())?.strip_suffix(':')?,
        (None, Some(d)) => url.strip_suffix(d)?.strip_suffix('@')?,
        (None, None) => url,
    };
    rest.strip_suffix(e.repository.as_str())?.strip_suffix('/')
}

/// The packed body of `e` (see the module doc): `host` is `e`'s [`host_of`], which the body
/// leaves out when `host_in_row` (the row names it).
pub fn encode(e: &Event, host: Option<&str>, host_in_row: bool) -> Result<Vec<u8>, StoreError> {
    // every field named: a field added to `Event` does not compile until it is stored
    let Event {
        id,
        kind: _,
        occurred_at,
        operator,
        project: _,
        repository: _,
        public,
        repository_created,
        tags,
        digest: _,
        media_type,
        size,
        resource_url,
        platforms,
        request_id,
        client_addr,
        user_agent,
        chart,
        scan,
        quota,
        test,
    } = e;
    let sub_ms = sub_ms_of(occurred_at);
    let media_code = media_type.as_deref().and_then(|m| {
        MEDIA_TYPES
            .iter()
            .position(|(_, t)| *t == m)
            .map(|i| i as u32 + 1)
    });
    // the event's own id as nothing but "own"
    let request_uuid = request_id.as_deref().and_then(request_uuid_bytes).map(|b| {
        if b == *id.as_bytes() {
            Vec::new()
        } else {
            b.to_vec()
        }
    });
    let client_ip = client_addr.as_deref().and_then(ip_bytes);
    let packed = Packed {
        operator: (operator != ANONYMOUS).then(|| operator.clone()),
        tags: tags.clone(),
        media_code,
        media_type: media_type.clone().filter(|_| media_code.is_none()),
        size: *size,
        host: host.filter(|_| !host_in_row).map(str::to_string),
        resource_url: host.is_none().then(|| resource_url.clone()),
        request_id: request_id.clone().filter(|_| request_uuid.is_none()),
        request_uuid,
        client_addr: client_addr.clone().filter(|_| client_ip.is_none()),
        client_ip,
        user_agent: user_agent.clone(),
        public: *public,
        repository_created: *repository_created,
        platforms: platforms.clone(),
        sub_ms: sub_ms.unwrap_or(0),
        occurred_at: json_text(&sub_ms.is_none().then_some(occurred_at)).map_err(encode_error)?,
        chart: json_text(chart).map_err(encode_error)?,
        scan: json_text(scan).map_err(encode_error)?,
        quota: json_text(quota).map_err(encode_error)?,
        test: *test,
    };
    let mut out = Vec::with_capacity(1 + packed.encoded_len());
    out.push(PACKED);
    packed
        .encode(&mut out)
        .map_err(|e| StoreError::Pack(e.into()))?;
    Ok(out)
}

/// A JSON body of schemas 13–19 read back: its short keys, and the long ones of rows written
/// before them.
#[derive(Deserialize)]
struct StoredBody {
    #[serde(rename = "t", alias = "occurred_at", default)]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(rename = "n", default)]
    sub_ms: u32,
    #[serde(rename = "o", alias = "operator")]
    operator: String,
    #[serde(rename = "p", alias = "public", default)]
    public: bool,
    #[serde(rename = "rc", alias = "repository_created", default)]
    repository_created: Option<i64>,
    #[serde(rename = "g", alias = "tags", default)]
    tags: Vec<String>,
    #[serde(rename = "m", alias = "media_type", default)]
    media_type: Option<String>,
    #[serde(rename = "z", alias = "size", default)]
    size: Option<u64>,
    #[serde(rename = "u", alias = "resource_url", default)]
    resource_url: Option<String>,
    #[serde(rename = "h", default)]
    host: Option<String>,
    #[serde(rename = "pl", alias = "platforms", default)]
    platforms: Vec<String>,
    #[serde(rename = "q", alias = "request_id", default)]
    request_id: Option<String>,
    /// A UUID request id as its 16 bytes in unpadded base64url; empty for the event's own id.
    #[serde(rename = "Q", default)]
    request_uuid: Option<String>,
    #[serde(rename = "c", alias = "client_addr", default)]
    client_addr: Option<String>,
    #[serde(rename = "a", alias = "user_agent", default)]
    user_agent: Option<String>,
    #[serde(default)]
    chart: Option<ChartInfo>,
    #[serde(default)]
    scan: Option<ScanInfo>,
    #[serde(default)]
    quota: Option<QuotaInfo>,
    #[serde(default)]
    test: bool,
}

impl TryFrom<StoredBody> for Packed {
    type Error = BodyError;

    /// A JSON body in the packed form, so that one decoder ([`decode`]) reads both.
    fn try_from(b: StoredBody) -> Result<Packed, BodyError> {
        use base64::Engine as _;
        let request_uuid = match b.request_uuid {
            Some(q) if q.is_empty() => Some(Vec::new()),
            Some(q) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&q)
                    .ok()
                    .filter(|bytes| bytes.len() == 16)
                    .ok_or(BodyError::RequestId(q))?,
            ),
            None => None,
        };
        Ok(Packed {
            operator: Some(b.operator),
            media_code: None,
            media_type: b.media_type.map(media_type_of_json),
            request_id: b.request_id.filter(|_| request_uuid.is_none()),
            request_uuid,
            client_ip: None,
            occurred_at: json_text(&b.occurred_at)?,
            chart: json_text(&b.chart)?,
            scan: json_text(&b.scan)?,
            quota: json_text(&b.quota)?,
            tags: b.tags,
            size: b.size,
            host: b.host,
            resource_url: b.resource_url,
            client_addr: b.client_addr,
            user_agent: b.user_agent,
            public: b.public,
            repository_created: b.repository_created,
            platforms: b.platforms,
            sub_ms: b.sub_ms,
            test: b.test,
        })
    }
}

fn from_json<T: serde::de::DeserializeOwned>(
    field: &'static str,
    v: Option<String>,
) -> Result<Option<T>, BodyError> {
    v.map(|v| serde_json::from_str(&v).map_err(|source| BodyError::Field { field, source }))
        .transpose()
}

/// What an event's row holds beside its body (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub id: uuid::Uuid,
    pub kind: EventKind,
    pub project: &'a str,
    pub repository: &'a str,
    pub digest: Option<&'a str>,
    /// `occurred_at`: unix ms.
    pub occurred_ms: i64,
    /// The resource URL's host, when the row names it (`host_id`, since schema 22).
    pub host: Option<&'a str>,
}

/// An event from its stored body (packed, or JSON as written before schema 20) and the
/// columns of its row.
pub fn decode(body: &[u8], row: Columns<'_>) -> Result<Event, BodyError> {
    let Columns {
        id,
        kind,
        project,
        repository,
        digest,
        occurred_ms,
        host,
    } = row;
    let p: Packed = match body.first() {
        Some(&PACKED) => Packed::decode(&body[1..])?,
        // the whole event, as written before schema 13
        Some(b'{') if body.starts_with(b"{\"id\":") => return Ok(serde_json::from_slice(body)?),
        Some(b'{') => serde_json::from_slice::<StoredBody>(body)?.try_into()?,
        other => return Err(BodyError::Format(other.copied())),
    };
    let resource_url = match (p.resource_url, p.host.as_deref().or(host)) {
        (Some(url), _) => url,
        (None, Some(host)) => {
            let path = resource_path(repository, p.tags.first().map(String::as_str), digest);
            format!("{host}{path}")
        }
        (None, None) => return Err(BodyError::NoResourceUrl),
    };
    let occurred_at = match from_json("occurred_at", p.occurred_at)? {
        Some(t) => t,
        None => time_of(occurred_ms, p.sub_ms).ok_or(BodyError::Time(occurred_ms))?,
    };
    let media_type = match (p.media_code, p.media_type) {
        (Some(code), _) => Some(
            MEDIA_TYPES
                .get((code as usize).wrapping_sub(1))
                .ok_or(BodyError::MediaCode(code))?
                .1
                .to_string(),
        ),
        (None, m) => m,
    };
    let request_id = match (p.request_uuid, p.request_id) {
        (Some(q), _) if q.is_empty() => Some(id.hyphenated().to_string()),
        (Some(q), _) => Some(
            uuid::Uuid::from_slice(&q)
                .map_err(|_| BodyError::RequestId(hex::encode(&q)))?
                .hyphenated()
                .to_string(),
        ),
        (None, q) => q,
    };
    let client_addr = match p.client_ip {
        Some(ip) => Some(ip_text(&ip).ok_or(BodyError::ClientIp(ip.len()))?),
        None => p.client_addr,
    };
    Ok(Event {
        id,
        kind,
        occurred_at,
        operator: p.operator.unwrap_or_else(|| ANONYMOUS.to_string()),
        project: project.to_string(),
        repository: repository.to_string(),
        public: p.public,
        repository_created: p.repository_created,
        tags: p.tags,
        digest: digest.map(str::to_string),
        media_type,
        size: p.size,
        resource_url,
        platforms: p.platforms,
        request_id,
        client_addr,
        user_agent: p.user_agent,
        chart: from_json("chart", p.chart)?,
        scan: from_json("scan", p.scan)?,
        quota: from_json("quota", p.quota)?,
        test: p.test,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull() -> Event {
        let mut e = Event::new(
            EventKind::PullArtifact,
            &crate::route::Repository::parse("bench/app").expect("repo"),
            ANONYMOUS,
        );
        e.digest = Some(format!("sha256:{}", "ab".repeat(32)));
        e.tags = vec!["bench".into()];
        e.media_type = Some(MEDIA_TYPES[0].1.into());
        e.size = Some(1_073_748_690);
        e.resource_url =
            Event::oci_resource_url("127.0.0.1:45409", "bench/app", Some("bench"), None);
        e.request_id = Some(e.id.to_string());
        e.client_addr = Some("127.0.0.1".into());
        e.occurred_at = DateTime::from_timestamp_millis(1_764_806_400_123).expect("time");
        e
    }

    fn columns(e: &Event) -> Columns<'_> {
        Columns {
            id: e.id,
            kind: e.kind,
            project: &e.project,
            repository: &e.repository,
            digest: e.digest.as_deref(),
            occurred_ms: e.occurred_at.timestamp_millis(),
            host: None,
        }
    }

    fn back(body: &[u8], e: &Event) -> Event {
        decode(body, columns(e)).expect("decode")
    }

    #[test]
    fn a_pull_packs_into_a_few_dozen_bytes_and_reads_back_whole() {
        let e = pull();
        let body = encode(&e, host_of(&e), false).expect("encode");
        // anonymous, the media type as a code, the host only, the request id as the event's
        assert_eq!(body.first(), Some(&PACKED));
        assert!(body.len() <= 50, "{} bytes: {body:?}", body.len());
        assert_eq!(back(&body, &e), e);
        // the host named by the row instead (schema 22)
        let host = host_of(&e).expect("host");
        assert_eq!(host, "127.0.0.1:45409");
        let short = encode(&e, Some(host), true).expect("encode");
        assert_eq!(short.len(), body.len() - 2 - host.len());
        let row = Columns {
            host: Some(host),
            ..columns(&e)
        };
        assert_eq!(decode(&short, row).expect("decode"), e);
        assert!(decode(&short, columns(&e)).is_err(), "no host anywhere");
    }

    #[test]
    fn every_field_reads_back() {
        let mut e = pull();
        e.kind = EventKind::PushArtifact;
        e.operator = "bob".into();
        e.public = true;
        e.repository_created = Some(-5);
        e.media_type = Some("application/vnd.example+json".into());
        e.platforms = vec!["linux/amd64".into()];
        e.request_id = Some("01A2379E-C2B1-76B2-B3AB-8958C36F2211".into());
        e.user_agent = Some("docker/27".into());
        e.client_addr = Some("not an address".into());
        e.chart = Some(ChartInfo::default());
        e.scan = Some(ScanInfo::default());
        e.quota = Some(QuotaInfo::default());
        e.test = true;
        e.resource_url = "elsewhere.example/x".into();
        e.occurred_at = DateTime::from_timestamp(1_764_806_400, 123_456_789).expect("time");
        assert_eq!(
            back(&encode(&e, host_of(&e), false).expect("encode"), &e),
            e
        );
        // a request id that is a UUID in wharf's text, not the event's own
        e.request_id = Some("01a2379e-c2b1-76b2-b3ab-8958c36f2211".into());
        let body = encode(&e, host_of(&e), false).expect("encode");
        assert!(!body.windows(8).any(|w| w == b"01a2379e"), "{body:?}");
        assert_eq!(back(&body, &e), e);
    }

    #[test]
    fn the_host_is_what_the_resource_path_leaves() {
        let mut e = pull();
        for (tags, digest, url, host) in [
            (vec!["v1"], None, "h:1/bench/app:v1", Some("h:1")),
            (vec!["v1"], Some("sha256:d"), "h/bench/app:v1", Some("h")),
            (vec![], Some("sha256:d"), "h/bench/app@sha256:d", Some("h")),
            (vec![], None, "h/bench/app", Some("h")),
            (vec![], None, "/bench/app", Some("")),
            (vec!["v1"], None, "h/bench/app@v1", None),
            (vec!["v1"], None, "h/other/app:v1", None),
            (vec![], Some("sha256:d"), "h/bench/app:sha256:d", None),
            (vec![], None, "hbench/app", None),
        ] {
            e.tags = tags.into_iter().map(String::from).collect();
            e.digest = digest.map(String::from);
            e.resource_url = url.into();
            let path = resource_path(
                &e.repository,
                e.tags.first().map(String::as_str),
                e.digest.as_deref(),
            );
            assert_eq!(host_of(&e), host, "{url}");
            assert_eq!(host_of(&e), url.strip_suffix(path.as_str()), "{url}");
        }
    }

    #[test]
    fn client_addresses_read_back_in_every_form() {
        let mut e = pull();
        e.resource_url =
            Event::oci_resource_url("registry.example", "bench/app", Some("bench"), None);
        for (addr, packed) in [
            ("127.0.0.1", true),
            ("2001:db8::1", true),
            ("::ffff:10.0.0.1", true),
            ("2001:DB8::1", false),
            ("010.0.0.1", false),
            ("127.0.0.1:5000", false),
        ] {
            e.client_addr = Some(addr.into());
            let body = encode(&e, host_of(&e), false).expect("encode");
            assert_eq!(back(&body, &e), e, "{addr}");
            assert_eq!(
                body.windows(addr.len()).any(|w| w == addr.as_bytes()),
                !packed,
                "{addr}: {body:?}"
            );
        }
    }

    #[test]
    fn a_json_body_of_schemas_13_to_19_still_reads() {
        let e = pull();
        let json = br#"{"o":"anonymous","g":["bench"],"m":"om","z":1073748690,"h":"127.0.0.1:45409","Q":"","c":"127.0.0.1"}"#;
        assert_eq!(back(json, &e), e);
    }

    #[test]
    fn a_body_of_no_known_format_is_an_error() {
        let e = pull();
        for body in [&b""[..], b"\x02abc", b"\x01\xff\xff"] {
            assert!(decode(body, columns(&e)).is_err(), "{body:?}");
        }
    }
}
