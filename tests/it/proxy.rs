//! Real clients (skopeo, helm) and registry operations through wharf, against the real
//! registry.

use crate::common::oci;
use crate::common::{ChartKind, Helm, Registry, RegistryClient, Skopeo, Wharf};

fn work_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wharf-it-work-")
        .tempdir()
        .unwrap()
}

/// Every config and layer blob of `image` is in the layout `dir`, intact.
fn assert_blobs_in_layout(dir: &std::path::Path, image: &oci::OciImage) {
    for b in image.layer_and_config_blobs() {
        let got = oci::sha256_file(&oci::blob_path(dir, &b.digest));
        assert_eq!(got.digest, b.digest);
        assert_eq!(got.size, b.size);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_single_platform_image() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(
        &work.path().join("src"),
        "v1",
        &[64 * 1024, 200 * 1024, 1024],
    );
    let skopeo = Skopeo::new();

    let remote = format!("docker://{}/prj/app:v1", wharf.host());
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    assert_eq!(skopeo.manifest_digest(&remote, &[]).await, image.digest);
    // It really is in the registry behind wharf.
    let direct = format!("docker://{}/prj/app:v1", registry.host());
    assert_eq!(skopeo.manifest_digest(&direct, &[]).await, image.digest);

    let out = work.path().join("out");
    skopeo
        .copy_ok(&remote, &format!("oci:{}:v1", out.display()), &[])
        .await;
    assert_eq!(oci::layout_digest(&out, "v1"), Some(image.digest.clone()));
    assert_blobs_in_layout(&out, &image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copy_all_of_a_multi_arch_index() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let index = oci::build_index(&work.path().join("src"), "multi", &[32 * 1024, 8 * 1024]);
    let skopeo = Skopeo::new();

    let remote = format!("docker://{}/prj/multi:1.0", wharf.host());
    skopeo.copy_ok(&index.oci_ref(), &remote, &["--all"]).await;
    assert_eq!(skopeo.manifest_digest(&remote, &[]).await, index.digest);
    for p in &index.platforms {
        let by_digest = format!("docker://{}/prj/multi@{}", wharf.host(), p.manifest.digest);
        assert_eq!(
            skopeo.manifest_digest(&by_digest, &[]).await,
            p.manifest.digest
        );
    }

    let out = work.path().join("out");
    skopeo
        .copy_ok(&remote, &format!("oci:{}:1.0", out.display()), &["--all"])
        .await;
    assert_eq!(oci::layout_digest(&out, "1.0"), Some(index.digest.clone()));
    for p in &index.platforms {
        assert!(oci::blob_path(&out, &p.manifest.digest).is_file());
    }
    assert_blobs_in_layout(&out, &index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_push_and_pull_of_an_oci_chart() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let helm = Helm::new();
    let chart = helm
        .package("mychart", "0.1.0", ChartKind::Application)
        .await;
    let lib = helm.package("mylib", "1.2.3", ChartKind::Library).await;

    let out = helm
        .push(&chart, &wharf.host(), "prj")
        .await
        .assert_success();
    assert!(
        out.stderr.contains("Digest:") || out.stdout.contains("Digest:"),
        "{out}"
    );
    helm.push(&lib, &wharf.host(), "prj").await.assert_success();

    let pulled = helm.pull(&wharf.host(), "prj", "mychart", "0.1.0").await;
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&chart).unwrap(),
        "pulled chart differs from the pushed one"
    );
    let pulled = helm.pull(&wharf.host(), "prj", "mylib", "1.2.3").await;
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&lib).unwrap()
    );

    // A fresh helm (empty cache) pulls the same bytes too.
    let fresh = Helm::new();
    let pulled = fresh.pull(&wharf.host(), "prj", "mychart", "0.1.0").await;
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&chart).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_manifest_by_digest_is_accepted() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[4096]);
    let rc = RegistryClient::new(&wharf.url());
    rc.push_image("prj/del", "v1", &image).await;

    let resp = rc
        .request(
            reqwest::Method::DELETE,
            &format!("/v2/prj/del/manifests/{}", image.digest),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let resp = rc
        .request(reqwest::Method::GET, "/v2/prj/del/manifests/v1")
        .header("accept", oci::MANIFEST_V1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_repository_blob_mount() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[20_000]);
    let rc = RegistryClient::new(&wharf.url());
    rc.push_image("prj/old", "v1", &image).await;
    let layer = &image.manifest().layers[0];

    let resp = rc
        .request(
            reqwest::Method::POST,
            &format!(
                "/v2/prj/new/blobs/uploads/?mount={}&from=prj/old",
                layer.digest
            ),
        )
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{:?}", resp.headers());
    let loc = resp.headers()["location"].to_str().unwrap();
    assert!(
        loc.ends_with(&format!("/v2/prj/new/blobs/{}", layer.digest)),
        "{loc}"
    );
    assert_eq!(
        resp.headers()["docker-content-digest"],
        layer.digest.as_str()
    );

    let resp = rc
        .request(
            reqwest::Method::HEAD,
            &format!("/v2/prj/new/blobs/{}", layer.digest),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_names_with_three_segments() {
    let registry = Registry::start().await;
    let wharf = Wharf::start(&registry.url()).await;
    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "1.0", &[16 * 1024]);
    let skopeo = Skopeo::new();

    let remote = format!("docker://{}/prj/team/app:1.0", wharf.host());
    skopeo.copy_ok(&image.oci_ref(), &remote, &[]).await;
    let out = work.path().join("out");
    skopeo
        .copy_ok(&remote, &format!("oci:{}:1.0", out.display()), &[])
        .await;
    assert_eq!(oci::layout_digest(&out, "1.0"), Some(image.digest.clone()));

    let rc = RegistryClient::new(&wharf.url());
    rc.push_image("prj/team/sub/deep", "x", &image).await;
    for (repo, tag) in [("prj/team/app", "1.0"), ("prj/team/sub/deep", "x")] {
        let tags: serde_json::Value = rc
            .request(reqwest::Method::GET, &format!("/v2/{repo}/tags/list"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tags["name"], repo);
        assert_eq!(tags["tags"], serde_json::json!([tag]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry_through_wharf() {
    let registry = Registry::start_with_auth("alice", "s3cret-pw").await;
    let wharf = Wharf::start(&registry.url()).await;
    let creds = registry.creds_arg().unwrap();

    let resp = crate::common::client()
        .get(format!("{}/v2/", wharf.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"wharf-test\""
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    let work = work_dir();
    let image = oci::build_image(&work.path().join("src"), "v1", &[8 * 1024]);
    let skopeo = Skopeo::new();
    let remote = format!("docker://{}/prj/secure:v1", wharf.host());

    skopeo
        .copy(&image.oci_ref(), &remote, &[])
        .await
        .assert_failure();
    skopeo
        .copy_ok(&image.oci_ref(), &remote, &["--dest-creds", &creds])
        .await;
    let out = work.path().join("out");
    skopeo
        .copy_ok(
            &remote,
            &format!("oci:{}:v1", out.display()),
            &["--src-creds", &creds],
        )
        .await;
    assert_eq!(oci::layout_digest(&out, "v1"), Some(image.digest.clone()));

    // helm: its first requests go without credentials (401), then it retries with them.
    let helm = Helm::new();
    let chart = helm
        .package("secret-chart", "0.2.0", ChartKind::Application)
        .await;
    let denied = helm
        .push(&chart, &wharf.host(), "prj")
        .await
        .assert_failure();
    assert!(denied.stderr.contains("authorization"), "{denied}");
    helm.login(&wharf.host(), "alice", "s3cret-pw").await;
    helm.push(&chart, &wharf.host(), "prj")
        .await
        .assert_success();
    let pulled = helm
        .pull(&wharf.host(), "prj", "secret-chart", "0.2.0")
        .await;
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(&chart).unwrap()
    );

    let wrong = skopeo
        .copy(
            &remote,
            &format!("oci:{}:v2", out.display()),
            &["--src-creds", "alice:wrong"],
        )
        .await
        .assert_failure();
    assert!(
        wrong.stderr.to_lowercase().contains("unauthorized") || wrong.stderr.contains("401"),
        "{wrong}"
    );
}
