//! Unit tests of the chart flows' parts.

use super::multipart::find;
use super::*;
use std::io::Write;

/// A gzip-compressed tar of `(path, content)` files.
fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

const CHART: &[u8] =
    b"apiVersion: v2\nname: web\nversion: 1.2.3-rc.1\ntype: library\nappVersion: \"2.0\"\n";

#[test]
fn chart_yaml_is_read_from_the_top_directory() {
    let t = tgz(&[
        ("web/values.yaml", b"a: 1\n"),
        ("web/charts/sub/Chart.yaml", b"name: sub\nversion: 9.9.9\n"),
        ("web/Chart.yaml", CHART),
    ]);
    let m = read_chart_yaml(&t, MAX_EXPANDED_BYTES).unwrap();
    assert_eq!(
        m,
        ChartMeta {
            name: "web".into(),
            version: "1.2.3-rc.1".into(),
            chart_type: "library".into(),
            app_version: Some("2.0".into())
        }
    );
    // no type: an application chart; a numeric appVersion is kept as text
    let t = tgz(&[(
        "./x/Chart.yaml",
        b"name: x\nversion: 0.1.0\nappVersion: 1.5\n",
    )]);
    let m = read_chart_yaml(&t, MAX_EXPANDED_BYTES).unwrap();
    assert_eq!(m.chart_type, "application");
    assert_eq!(m.app_version.as_deref(), Some("1.5"));
}

#[test]
fn non_charts_are_errors() {
    assert!(matches!(
        read_chart_yaml(b"not gzip at all", MAX_EXPANDED_BYTES),
        Err(ChartError::Archive(_))
    ));
    let no_chart = tgz(&[("web/values.yaml", b"a: 1\n"), ("Chart.yaml", CHART)]);
    assert!(matches!(
        read_chart_yaml(&no_chart, MAX_EXPANDED_BYTES),
        Err(ChartError::NoChartYaml)
    ));
    let no_version = tgz(&[("web/Chart.yaml", b"name: web\n")]);
    assert!(matches!(
        read_chart_yaml(&no_version, MAX_EXPANDED_BYTES),
        Err(ChartError::Missing("version"))
    ));
    let bad_yaml = tgz(&[("web/Chart.yaml", b"name: [unclosed\n")]);
    assert!(matches!(
        read_chart_yaml(&bad_yaml, MAX_EXPANDED_BYTES),
        Err(ChartError::Yaml(_))
    ));
    // the cause is kept, not only its text
    for e in [
        read_chart_yaml(b"not gzip at all", MAX_EXPANDED_BYTES),
        read_chart_yaml(&bad_yaml, MAX_EXPANDED_BYTES),
    ] {
        let e = e.unwrap_err();
        assert!(std::error::Error::source(&e).is_some(), "{e:?}");
    }
    // a truncated archive
    let t = tgz(&[("web/Chart.yaml", CHART)]);
    assert!(read_chart_yaml(&t[..t.len() / 2], MAX_EXPANDED_BYTES).is_err());
}

#[test]
fn expansion_is_capped() {
    let big = vec![0u8; 256 * 1024];
    let t = tgz(&[("web/big.bin", &big), ("web/Chart.yaml", CHART)]);
    assert!(t.len() < 16 * 1024, "compresses well");
    assert!(matches!(
        read_chart_yaml(&t, 64 * 1024),
        Err(ChartError::TooBig(65_536))
    ));
    assert!(read_chart_yaml(&t, 1 << 20).is_ok());
}

fn form(nl: &str, boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    write!(out, "preamble{nl}").unwrap();
    for (name, filename, data) in parts {
        write!(out, "--{boundary}{nl}").unwrap();
        match filename {
            Some(f) => write!(
                out,
                "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"{nl}Content-Type: application/octet-stream{nl}{nl}"
            )
            .unwrap(),
            None => write!(out, "content-disposition: form-data; name={name}{nl}{nl}").unwrap(),
        }
        out.extend_from_slice(data);
        out.extend_from_slice(nl.as_bytes());
    }
    write!(out, "--{boundary}--{nl}").unwrap();
    out
}

#[test]
fn multipart_chart_field() {
    let t = tgz(&[("web/Chart.yaml", CHART)]);
    for nl in ["\r\n", "\n"] {
        let body = form(
            nl,
            "XyZ-123",
            &[
                ("prov", Some("web.tgz.prov"), b"-----BEGIN PGP"),
                ("chart", Some("web-1.2.3-rc.1.tgz"), &t),
            ],
        );
        let ct = "multipart/form-data; boundary=\"XyZ-123\"";
        assert_eq!(multipart_boundary(ct).as_deref(), Some("XyZ-123"));
        let u = read_upload(&body, Some(ct)).unwrap();
        assert_eq!(u.size, t.len() as u64);
        assert_eq!(u.meta.name, "web");
        // the tgz bytes come back exactly
        assert_eq!(multipart_field(&body, "XyZ-123", "chart").unwrap(), &t[..]);
    }
    // a value containing the boundary text without CRLF--
    let body = form("\r\n", "b", &[("chart", Some("c.tgz"), b"x--b y")]);
    assert_eq!(multipart_field(&body, "b", "chart").unwrap(), b"x--b y");
    // a plain field named chart is not the file ChartMuseum reads (Go's FormFile): a decoy
    // before the file is skipped, and without a file there is no chart
    let decoy = tgz(&[("evil/Chart.yaml", b"name: evil\nversion: 6.6.6\n")]);
    let body = form(
        "\r\n",
        "b",
        &[("chart", None, &decoy), ("chart", Some("web.tgz"), &t)],
    );
    let u = read_upload(&body, Some("multipart/form-data; boundary=b")).unwrap();
    assert_eq!(u.meta.name, "web");
    let body = form("\r\n", "b", &[("chart", None, &t)]);
    assert!(matches!(
        read_upload(&body, Some("multipart/form-data; boundary=b")),
        Err(ChartError::NoChartField)
    ));
    let empty_name = form("\r\n", "b", &[("chart", Some(""), &t)]);
    assert!(matches!(
        read_upload(&empty_name, Some("multipart/form-data; boundary=b")),
        Err(ChartError::NoChartField)
    ));
    // no chart field
    let body = form("\r\n", "b", &[("prov", Some("p"), b"sig")]);
    assert!(matches!(
        read_upload(&body, Some("multipart/form-data; boundary=b")),
        Err(ChartError::NoChartField)
    ));
    // truncated
    let body = form("\r\n", "b", &[("chart", Some("c.tgz"), &t)]);
    assert!(multipart_field(&body[..body.len() / 2], "b", "chart").is_err());
    assert!(matches!(
        read_upload(b"", Some("multipart/form-data")),
        Err(ChartError::Multipart("no boundary"))
    ));
    assert!(multipart_field(b"garbage", "b", "chart").is_err());
    // not multipart: the raw body is the chart
    let u = read_upload(&t, Some("application/octet-stream")).unwrap();
    assert_eq!(u.meta.version, "1.2.3-rc.1");
    let u = read_upload(&t, None).unwrap();
    assert_eq!(u.size, t.len() as u64);
}

#[test]
fn disposition_params() {
    let v = r#"form-data; name="chart"; filename="a \"b\"; c.tgz""#;
    assert_eq!(disposition_param(v, "name").as_deref(), Some("chart"));
    assert_eq!(
        disposition_param(v, "filename").as_deref(),
        Some(r#"a "b"; c.tgz"#)
    );
    assert_eq!(
        disposition_param("form-data; NAME=prov", "name").as_deref(),
        Some("prov")
    );
    assert_eq!(disposition_param("form-data", "name"), None);
    assert_eq!(disposition_param("form-data; name=\"open", "name"), None);
}

#[test]
fn find_is_a_linear_substring_search_from_an_offset() {
    assert_eq!(find(b"aaaaab", b"aab", 0), Some(3));
    assert_eq!(find(b"abcabcabd", b"abcabd", 0), Some(3));
    assert_eq!(find(b"abc", b"abc", 1), None);
    assert_eq!(find(b"abc", b"", 0), None);
    assert_eq!(find(b"abc", b"c", 9), None);
    assert_eq!(find(b"abcabc", b"abc", 1), Some(3));
    let hay = vec![b'-'; 100_000];
    assert_eq!(find(&hay, b"\r\n--------x", 0), None);
}

#[test]
fn chart_file_names_split_into_name_and_version() {
    let s = split_chart_file;
    assert_eq!(s("nginx-1.2.3.tgz"), Some(("nginx", "1.2.3")));
    assert_eq!(s("my-chart-0.1.0.tgz"), Some(("my-chart", "0.1.0")));
    assert_eq!(s("my-chart-2-1.0.0.tgz"), Some(("my-chart-2", "1.0.0")));
    assert_eq!(s("app-1.2.3-rc1.tgz"), Some(("app", "1.2.3-rc1")));
    assert_eq!(s("app-1.2.3-rc.1.tgz"), Some(("app", "1.2.3-rc.1")));
    assert_eq!(s("app-1.0.0-0.3.7.tgz"), Some(("app", "1.0.0-0.3.7")));
    assert_eq!(
        s("app-1.0.0-20240101.1+build.5.tgz"),
        Some(("app", "1.0.0-20240101.1+build.5"))
    );
    assert_eq!(
        s("k8s-1.2-tools-0.1.0.tgz"),
        Some(("k8s-1.2-tools", "0.1.0"))
    );
    assert_eq!(s("chart-v2-v3.1.0.tgz"), Some(("chart-v2", "v3.1.0")));
    // not full SemVer: the last version-like suffix
    assert_eq!(s("old-1.2.tgz"), Some(("old", "1.2")));
    assert_eq!(s("x-1.0-beta.tgz"), Some(("x", "1.0-beta")));
    for bad in [
        "nginx.tgz",
        "nginx-latest.tgz",
        "-1.0.0.tgz",
        "nginx-1.2.3.tgz.prov",
        "nginx-1.2.3.tar.gz",
        "nginx-1.tgz",
    ] {
        assert_eq!(s(bad), None, "{bad}");
    }
    assert!(is_semver("1.2.3"));
    assert!(is_semver("v1.2.3-alpha-1.2+x"));
    assert!(!is_semver("1.2"));
    assert!(!is_semver("1.2.3-"));
    assert!(!is_semver("1.2.3-a..b"));
    assert!(!is_semver("1.2.x"));
}

#[test]
fn paths_map_to_chartmuseum() {
    let m = |p: &str, q: Option<&str>| upstream_path(p, q);
    assert_eq!(
        m("/chartrepo/prj/index.yaml", None).as_deref(),
        Some("/prj/index.yaml")
    );
    assert_eq!(
        m("/chartrepo/prj/charts/a-1.0.0.tgz", None).as_deref(),
        Some("/prj/charts/a-1.0.0.tgz")
    );
    assert_eq!(
        m("/api/chartrepo/prj/charts", Some("force")).as_deref(),
        Some("/api/prj/charts?force")
    );
    assert_eq!(
        m("/api/chartrepo/prj/prov", None).as_deref(),
        Some("/api/prj/prov")
    );
    assert_eq!(
        m("/api/chartrepo/prj/charts/a/1.0.0", None).as_deref(),
        Some("/api/prj/charts/a/1.0.0")
    );
    for bad in [
        "/chartrepo/prj/charts/..",
        "/chartrepo/../api/prj/charts",
        "/api/chartrepo/prj/charts/%2e%2E/x",
        "/chartrepo/prj/charts/a%2Fb.tgz",
        "/chartrepo/prj/charts/./a.tgz",
        "/v2/x",
    ] {
        assert_eq!(m(bad, None), None, "{bad}");
    }
}

#[test]
fn absolute_index_urls_point_back_at_wharf() {
    let relative = b"apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: 1.0.0\n    urls:\n    - charts/web-1.0.0.tgz\ngenerated: \"2024-01-01T00:00:00Z\"\n";
    assert_eq!(rewrite_index(relative, "https://w.example", "prj"), None);
    let absolute = b"apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: \"1.10\"\n    digest: abc\n    urls:\n    - http://cm.internal:8080/prj/charts/web-1.10.tgz\n    - charts/web-1.10.tgz\n  other:\n  - name: other\n    version: 2.0.0\n    urls:\n    - https://elsewhere.example/x/index.yaml\ngenerated: \"2024-01-01T00:00:00Z\"\n";
    let out = rewrite_index(absolute, "https://w.example", "prj").unwrap();
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out).unwrap();
    let web = &v["entries"]["web"][0];
    assert_eq!(
        web["urls"][0].as_str(),
        Some("https://w.example/chartrepo/prj/charts/web-1.10.tgz")
    );
    assert_eq!(web["urls"][1].as_str(), Some("charts/web-1.10.tgz"));
    assert_eq!(
        web["version"].as_str(),
        Some("1.10"),
        "strings stay strings"
    );
    assert_eq!(
        v["entries"]["other"][0]["urls"][0].as_str(),
        Some("https://elsewhere.example/x/index.yaml")
    );
    assert_eq!(rewrite_index(b"not: [yaml", "https://w", "prj"), None);
    assert_eq!(rewrite_index(b"apiVersion: v1\n", "https://w", "prj"), None);
}

/// A large index is parsed off the runtime's workers: while it is, the other tasks of a
/// single-threaded runtime still run (before, the parse held the worker for its whole length).
#[tokio::test(flavor = "current_thread")]
async fn a_large_index_is_rewritten_off_the_runtime() {
    use std::fmt::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut y = String::from("apiVersion: v1\nentries:\n");
    for i in 0..20_000 {
        let _ = write!(
            y,
            "  c{i}:\n  - name: c{i}\n    version: 1.0.0\n    urls:\n    - http://cm:8080/prj/charts/c{i}-1.0.0.tgz\n"
        );
    }
    let rewriting = Arc::new(AtomicBool::new(true));
    let seen = rewriting.clone();
    // runs only when the test's task gives the thread up
    let other = tokio::spawn(async move { seen.load(Ordering::SeqCst) });
    let out =
        super::index::rewrite_off_runtime(bytes::Bytes::from(y), "https://w.example", "prj").await;
    rewriting.store(false, Ordering::SeqCst);
    let out = String::from_utf8(out.expect("rewritten")).unwrap();
    assert!(out.contains("https://w.example/chartrepo/prj/charts/c19999-1.0.0.tgz"));
    assert!(
        other.await.unwrap(),
        "another task ran while the index was parsed"
    );
}

/// Parses of large indexes take turns, one per CPU: with every turn taken, a rewrite waits.
#[tokio::test(flavor = "current_thread")]
async fn index_parses_take_turns() {
    let turns = super::index::parse_turns();
    // every turn (another test may hold one for a moment)
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    let all = turns.acquire_many(n as u32).await.unwrap();
    let body = bytes::Bytes::from_static(
        b"apiVersion: v1\nentries:\n  web:\n  - name: web\n    version: 1.0.0\n    urls:\n    - http://cm/prj/charts/web-1.0.0.tgz\n",
    );
    let rewrite = super::index::rewrite_off_runtime(body, "https://w", "prj");
    tokio::pin!(rewrite);
    let waited = tokio::time::timeout(std::time::Duration::from_millis(100), &mut rewrite).await;
    assert!(waited.is_err(), "no turn free: the rewrite waits");
    drop(all);
    assert!(rewrite.await.is_some());
}
