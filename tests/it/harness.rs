//! Self-tests of the harness: the receiver, the OCI layout builder, config merging.

use std::time::{Duration, Instant};

use crate::common::oci::{self, CONFIG_V1, INDEX_V1, MANIFEST_V1};
use crate::common::{Receiver, Reply, Skopeo, WharfBuilder, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_records_requests_and_follows_programmed_replies() {
    let rx = Receiver::start().await;
    rx.push_all([
        Reply::retry_after(503, "7"),
        Reply::delay(Duration::from_millis(300), Reply::status(201).body("late")),
        Reply::close(),
    ]);
    let c = client();
    let url = format!("{}/hook?x=1", rx.url());

    let r = c
        .post(&url)
        .header("x-test", "one")
        .header("content-type", "application/json")
        .body(r#"{"type":"PUSH_ARTIFACT"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");

    let t = Instant::now();
    let r = c.post(&url).body("second").send().await.unwrap();
    assert_eq!(r.status(), 201);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.text().await.unwrap(), "late");

    let err = client().post(&url).body("third").send().await;
    assert!(err.is_err(), "a closed connection must fail: {err:?}");

    let r = c.get(format!("{}/after", rx.url())).send().await.unwrap();
    assert_eq!(r.status(), 200, "default reply");

    let got = rx.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/hook?x=1");
    assert_eq!(got[0].json()["type"], "PUSH_ARTIFACT");
    assert_eq!(got[0].header("x-test"), Some("one"));
    assert_eq!(got[1].text(), "second");
    assert_eq!(got[2].text(), "third");
    assert_eq!(got[3].path, "/after");
    assert!(got.windows(2).all(|w| w[0].at <= w[1].at));

    // Repeated headers are recorded in order.
    let mut raw = Vec::new();
    raw.extend_from_slice(format!("GET /rep HTTP/1.1\r\nHost: {}\r\n", rx.addr()).as_bytes());
    for v in ["a/1", "b/2", "c/3"] {
        raw.extend_from_slice(format!("Accept: {v}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"Connection: close\r\n\r\n");
    let resp = crate::common::http::raw_request(rx.addr(), &raw).await;
    assert_eq!(resp.status, 200);
    let got = rx.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(got[4].header_all("accept"), ["a/1", "b/2", "c/3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layouts_are_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let image = oci::build_image(&layout, "single", &[10_000, 0, oci::BIG + 1]);
    let index = oci::build_index(&layout, "multi", &[5_000]);

    assert_eq!(
        std::fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert_eq!(
        oci::layout_digest(&layout, "single").as_deref(),
        Some(image.digest.as_str())
    );
    assert_eq!(
        oci::layout_digest(&layout, "multi").as_deref(),
        Some(index.digest.as_str())
    );

    // Every blob's name is its digest.
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(oci::sha256_file(&p).digest, format!("sha256:{name}"));
    }

    // Manifest, config and diff_ids agree with the layers.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.blob_path(&image.digest)).unwrap()).unwrap();
    assert_eq!(m["mediaType"], MANIFEST_V1);
    assert_eq!(m["config"]["mediaType"], CONFIG_V1);
    assert_eq!(m["layers"].as_array().unwrap().len(), 3);
    let p = image.manifest();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.blob_path(&p.config.digest)).unwrap()).unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let media_types: Vec<&str> = p.layers.iter().map(|l| l.media_type.as_str()).collect();
    assert_eq!(
        media_types,
        [oci::LAYER_TAR_GZIP, oci::LAYER_TAR_GZIP, oci::LAYER_TAR]
    );
    for (layer, diff_id) in p.layers.iter().zip(diff_ids) {
        let file = std::fs::File::open(image.blob_path(&layer.digest)).unwrap();
        let mut tar = Vec::new();
        if layer.media_type == oci::LAYER_TAR {
            std::io::Read::read_to_end(&mut &file, &mut tar).unwrap();
        } else {
            let mut gz = flate2::read::GzDecoder::new(file);
            std::io::Read::read_to_end(&mut gz, &mut tar).unwrap();
        }
        assert_eq!(
            crate::common::http::sha256_digest(&tar),
            diff_id.as_str().unwrap()
        );
        let mut archive = tar::Archive::new(&tar[..]);
        assert_eq!(archive.entries().unwrap().count(), 2);
    }

    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(index.blob_path(&index.digest)).unwrap()).unwrap();
    assert_eq!(idx["mediaType"], INDEX_V1);
    let platforms: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]))
        .collect();
    assert_eq!(platforms, [r#""linux"/"amd64""#, r#""linux"/"arm64""#]);
    assert_ne!(
        index.platforms[0].config.digest,
        index.platforms[1].config.digest
    );

    // And skopeo reads the layout.
    let skopeo = Skopeo::new();
    assert_eq!(
        skopeo.manifest_digest(&image.oci_ref(), &[]).await,
        image.digest
    );
    assert_eq!(
        skopeo.manifest_digest(&index.oci_ref(), &[]).await,
        index.digest
    );
}

#[test]
fn yaml_snippets_are_deep_merged() {
    let b = WharfBuilder::new("http://127.0.0.1:1")
        .yaml("upstream:\n  response_timeout: 1s\n")
        .yaml("projects:\n  prj:\n    public: true\n");
    let b = b.yaml("log:\n  level: debug\n");
    let text = b.render(std::path::Path::new("/tmp/x"));
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(
        v["upstream"]["registry"].as_str(),
        Some("http://127.0.0.1:1")
    );
    assert_eq!(v["upstream"]["response_timeout"].as_str(), Some("1s"));
    assert_eq!(v["projects"]["prj"]["public"].as_bool(), Some(true));
    assert_eq!(v["log"]["level"].as_str(), Some("debug"));
    wharf::config::Config::from_yaml_with_env(
        &text,
        std::path::Path::new("test.yaml"),
        std::iter::empty(),
    )
    .unwrap();
}
