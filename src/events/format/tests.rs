use super::*;
use crate::events::EventKind;
use crate::events::ScanType;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/payloads")
}

/// The template of the `Custom` golden files (and of docs/events.md's example).
pub(crate) fn example_template() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/templates/example.json.j2"),
    )
    .unwrap()
}

/// The context of the golden files: project 1, policy 7, delivery 42, `external_url` set.
pub(crate) fn golden_ctx() -> RenderCtx {
    RenderCtx {
        project_id: 1,
        policy_id: 7,
        delivery_id: Some(42),
        external_url: Some("https://registry.example.com".into()),
    }
}

/// `e` as `f` (`Custom`: the example template as JSON).
pub(crate) fn render_golden(e: &Event, f: PayloadFormat, ctx: &RenderCtx) -> Payload {
    let template = example_template();
    let custom = Custom {
        template: &template,
        content_type: "application/json",
    };
    render(e, f, Some(custom), ctx).unwrap()
}

/// The golden file of sample `name` in format `f`.
pub(crate) fn golden_file(name: &str, f: PayloadFormat) -> PathBuf {
    fixtures().join(format!("{name}.{}.json", f.name().to_ascii_lowercase()))
}

/// Golden files: `fixtures/payloads/<kind>.<format>.json`. `WHARF_BLESS=1` rewrites them.
#[test]
fn golden_payloads() {
    #[allow(clippy::disallowed_methods)] // a test's switch, not configuration
    let bless = std::env::var_os("WHARF_BLESS").is_some();
    let ctx = golden_ctx();
    let mut failures = Vec::new();
    for (name, e) in samples() {
        for f in PayloadFormat::ALL {
            let p = render_golden(&e, f, &ctx);
            let v: Value = serde_json::from_slice(&p.body).unwrap();
            let pretty = serde_json::to_string_pretty(&v).unwrap() + "\n";
            let path = golden_file(name, f);
            if bless {
                std::fs::create_dir_all(fixtures()).unwrap();
                std::fs::write(&path, &pretty).unwrap();
                continue;
            }
            match std::fs::read_to_string(&path) {
                Ok(golden) if golden == pretty => {}
                Ok(_) => failures.push(format!("{} differs", path.display())),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden payloads (WHARF_BLESS=1 to rewrite):\n{}",
        failures.join("\n")
    );
}

/// docs/events.md shows every golden payload of Harbor's and wharf's first formats as it is,
/// and at least one of each chat format and of `Custom` (regenerate its examples section
/// from fixtures/payloads when this fails).
#[test]
fn docs_show_the_golden_payloads() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/events.md"))
            .unwrap();
    let shown = |name: &str, f: PayloadFormat| {
        let golden = std::fs::read_to_string(golden_file(name, f)).unwrap();
        doc.contains(golden.trim())
    };
    for f in PayloadFormat::ALL {
        let chat_or_custom = PayloadFormat::CHAT.contains(&f) || f == PayloadFormat::Custom;
        if chat_or_custom {
            assert!(
                samples().iter().any(|(name, _)| shown(name, f)),
                "docs/events.md shows no golden {} payload",
                f.name()
            );
            continue;
        }
        for (name, _) in samples() {
            assert!(
                shown(name, f),
                "docs/events.md lacks {}",
                golden_file(name, f).display()
            );
        }
    }
    // the example template itself
    assert!(
        doc.contains(example_template().trim()),
        "docs/events.md lacks fixtures/templates/example.json.j2"
    );
}

/// Every seed field of every kind appears in every format.
#[test]
fn seed_fields_reach_every_format() {
    let ctx = RenderCtx::default();
    for (_, e) in samples() {
        let mut must: Vec<String> = vec![e.project.clone(), e.operator.clone()];
        if !e.kind.is_chart() {
            must.push(e.image_name());
            must.push(e.digest.clone().unwrap());
        }
        if e.kind == EventKind::PushArtifact {
            must.push(e.resource_url.clone());
            must.push("latest".into());
        }
        if e.kind == EventKind::DeleteArtifact {
            must.push(e.size.unwrap().to_string());
        }
        if let Some(c) = &e.chart {
            must.extend([
                c.name.clone(),
                c.version.clone(),
                c.chart_type.clone(),
                c.size.unwrap().to_string(),
            ]);
        }
        if let Some(s) = &e.scan {
            must.push(s.status.name().to_string());
            if let Some(err) = &s.error {
                must.push(err.clone());
            }
            for v in &s.vulnerabilities {
                must.extend([
                    v.id.clone(),
                    v.description.clone().unwrap(),
                    v.link.clone().unwrap(),
                    v.severity.name().to_string(),
                    v.fix_link.clone().unwrap(),
                ]);
            }
        }
        if let Some(q) = &e.quota {
            must.push(q.details.clone());
        }
        // `Custom` shows what its template picks
        for f in PayloadFormat::ALL
            .into_iter()
            .filter(|f| *f != PayloadFormat::Custom)
        {
            let body = String::from_utf8(render(&e, f, None, &ctx).unwrap().body).unwrap();
            // CloudEvents and the chat formats carry the time as RFC 3339
            let time = if f == PayloadFormat::CloudEvents || PayloadFormat::CHAT.contains(&f) {
                rfc3339(&e.occurred_at)
            } else {
                e.occurred_at.timestamp().to_string()
            };
            assert!(
                body.contains(&time),
                "{:?} {:?} lacks the time: {body}",
                e.kind,
                f
            );
            for m in &must {
                assert!(
                    body.contains(m.as_str()),
                    "{:?} {:?} lacks {m}: {body}",
                    e.kind,
                    f
                );
            }
        }
    }
}

#[test]
fn tagless_resources_carry_the_digest() {
    let (_, mut e) = samples().remove(2);
    e.tags.clear();
    let v = event_data(&e);
    assert_eq!(v["resources"][0]["tag"], json!(e.digest.clone().unwrap()));
    assert_eq!(
        v["resources"][0]["image_name"],
        json!(format!("prj/repo1@{}", e.digest.unwrap()))
    );
}

#[test]
fn slack_text_stays_within_block_kit_limits() {
    let (_, mut e) = samples().remove(8);
    let v = e.scan.as_ref().unwrap().vulnerabilities[0].clone();
    e.scan.as_mut().unwrap().vulnerabilities = vec![v; 200];
    for f in [PayloadFormat::Slack, PayloadFormat::SlackRich] {
        let p = render(&e, f, None, &RenderCtx::default()).unwrap();
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        for block in v["blocks"].as_array().unwrap() {
            if let Some(t) = block["text"]["text"].as_str() {
                assert!(t.chars().count() <= 3000, "{f:?}: {}", t.len());
            }
        }
    }
}

/// Harbor's Slack message: six sections in Harbor's order, the event data tab-indented.
#[test]
fn slack_is_harbors_layout() {
    let (_, e) = samples().remove(0);
    let v: Value = serde_json::from_slice(
        &render(&e, PayloadFormat::Slack, None, &RenderCtx::default())
            .unwrap()
            .body,
    )
    .unwrap();
    let texts: Vec<&str> = v["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["type"], "section");
            assert_eq!(b["text"]["type"], "mrkdwn");
            b["text"]["text"].as_str().unwrap()
        })
        .collect();
    assert_eq!(texts.len(), 6);
    assert_eq!(texts[0], "*Harbor webhook events*");
    assert_eq!(texts[1], "*event_type:* PUSH_ARTIFACT");
    assert_eq!(
        texts[2],
        "*occur_at:* <!date^1700000000^{date} at {time}|February 18th, 2014 at 6:39 AM PST>"
    );
    assert_eq!(texts[3], "*operator:* alice");
    assert_eq!(texts[4], "*event_data:*");
    assert!(
        texts[5].starts_with("```{\n\t\"resources\": [\n\t\t{"),
        "{}",
        texts[5]
    );
    assert!(texts[5].ends_with("}```"));
    assert_eq!(v.as_object().unwrap().len(), 1, "only blocks: {v}");
}

/// Each delivery gets its own CloudEvents id, the same on every retry; wharf's event id is
/// the extension `eventid`.
#[test]
fn cloudevents_id_is_per_delivery() {
    let (_, e) = samples().remove(0);
    let id = |policy_id, delivery_id| {
        let ctx = RenderCtx {
            project_id: 1,
            policy_id,
            delivery_id,
            external_url: None,
        };
        let v: Value = serde_json::from_slice(
            &render(&e, PayloadFormat::CloudEvents, None, &ctx)
                .unwrap()
                .body,
        )
        .unwrap();
        assert_eq!(v["eventid"], e.id.to_string());
        v["id"].as_str().unwrap().to_string()
    };
    assert_eq!(id(7, Some(1)), id(7, Some(1)));
    assert_ne!(id(7, Some(1)), id(7, Some(2)));
    assert_ne!(id(7, Some(1)), e.id.to_string());
    assert_ne!(id(7, None), id(7, None));
    assert!(uuid::Uuid::parse_str(&id(7, Some(3))).is_ok());
}

/// Every JSON path of `v` (`a.b`, arrays as `a[]`; an object under `scan_overview` keyed by
/// a MIME type as `<mime>`).
fn paths(v: &Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.ends_with("scan_overview") {
                    "<mime>"
                } else {
                    k
                };
                let p = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(p.clone());
                paths(x, &p, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                paths(x, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// fixtures/harbor-fields.json lists, per sample and format, Harbor's fields (from Harbor's
/// notifier code and the reference) and the fields wharf adds. Every Harbor field is there,
/// and nothing else is added than what docs/events.md lists.
#[test]
fn formats_have_harbors_fields_and_only_the_documented_additions() {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/harbor-fields.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = golden_ctx();
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/events.md"))
            .unwrap();
    let mut failures = Vec::new();
    for (name, e) in samples() {
        let Some(formats) = spec["samples"].get(name) else {
            assert!(e.kind.is_chart(), "{name} is not in harbor-fields.json");
            continue;
        };
        for f in [
            PayloadFormat::Default,
            PayloadFormat::CloudEvents,
            PayloadFormat::Slack,
        ] {
            let v: Value =
                serde_json::from_slice(&render(&e, f, None, &ctx).unwrap().body).unwrap();
            let mut got = std::collections::BTreeSet::new();
            paths(&v, "", &mut got);
            let list = |k: &str| -> std::collections::BTreeSet<String> {
                formats[f.name()][k]
                    .as_array()
                    .unwrap_or_else(|| panic!("{name}.{}.{k}", f.name()))
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect()
            };
            let (harbor, adds) = (list("harbor"), list("wharf_adds"));
            for missing in harbor.difference(&got) {
                failures.push(format!("{name} {}: lacks Harbor's {missing}", f.name()));
            }
            for extra in got.difference(&harbor) {
                if !adds.contains(extra) {
                    failures.push(format!("{name} {}: undocumented {extra}", f.name()));
                }
            }
            for stale in adds.difference(&got) {
                failures.push(format!("{name} {}: listed but absent {stale}", f.name()));
            }
            // docs/events.md names every addition (inside event_data / data), or the
            // added field it is part of
            for add in &adds {
                let short = add
                    .strip_prefix("event_data.")
                    .or_else(|| add.strip_prefix("data."))
                    .unwrap_or(add);
                let named = short
                    .match_indices('.')
                    .map(|(i, _)| &short[..i])
                    .chain(std::iter::once(short))
                    .map(|p| p.trim_end_matches("[]"))
                    .any(|p| {
                        adds.iter().any(|a| a.ends_with(p)) && doc.contains(&format!("`{p}`"))
                    });
                if !named {
                    failures.push(format!("docs/events.md does not name `{short}`"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The Default payload is serialized straight from the event (`data::DefaultPayload`), not
/// through a JSON value: the cases the golden samples do not cover keep Harbor's keys in their
/// order — a test event's `test` after `event_id`, an SBOM scan's `sbom_overview` after
/// `resource_url` — and the value view (`default_payload`, the templates' data) says the same.
#[test]
fn default_payload_keys_of_test_events_and_sbom_scans() {
    let (_, mut e) = samples()
        .into_iter()
        .find(|(n, _)| n.starts_with("scanning_completed"))
        .expect("a scan sample");
    e.test = true;
    e.user_agent = Some("curl/8".into());
    if let Some(s) = e.scan.as_mut() {
        s.scan_type = ScanType::Sbom;
        s.sbom_digest = Some("sha256:5b0b".into());
    }
    let p = render(&e, PayloadFormat::Default, None, &golden_ctx()).unwrap();
    let v: Value = serde_json::from_slice(&p.body).unwrap();
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let data = &v["event_data"];
    assert_eq!(
        keys(&data["custom_attributes"]),
        [
            "event_id",
            "test",
            "request_id",
            "client_addr",
            "user_agent"
        ]
    );
    assert_eq!(data["custom_attributes"]["test"], "true");
    assert_eq!(
        keys(&data["resources"][0]),
        [
            "digest",
            "tag",
            "resource_url",
            "sbom_overview",
            "tags",
            "image_name",
            "media_type",
            "size"
        ]
    );
    assert_eq!(
        data["resources"][0]["sbom_overview"]["sbom_digest"],
        "sha256:5b0b"
    );
    assert_eq!(data["scan"]["scan_type"], "sbom");
    assert_eq!(v, default_payload(&e));
}
