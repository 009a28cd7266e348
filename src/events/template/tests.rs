use super::*;
use crate::events::EventKind;
use crate::events::format::sample;

fn ctx() -> RenderCtx {
    RenderCtx {
        project_id: 3,
        policy_id: 7,
        delivery_id: Some(1),
        external_url: Some("https://registry.example.com".into()),
    }
}

fn text(template: &str, kind: EventKind) -> Result<String, TemplateError> {
    render(template, "text/plain", &sample(kind), &ctx())
        .map(|p| String::from_utf8(p.body).unwrap())
}

fn push(template: &str) -> String {
    text(template, EventKind::PushArtifact).unwrap_or_else(|e| panic!("{template}: {e}"))
}

#[test]
fn the_data_is_the_default_payload_with_id_time_project_and_link() {
    let e = sample(EventKind::PushArtifact);
    assert_eq!(push("{{ type }}"), "PUSH_ARTIFACT");
    assert_eq!(push("{{ occur_at }}"), "2023-11-14T22:13:20Z");
    assert_eq!(push("{{ occur_at_unix }}"), "1700000000");
    assert_eq!(push("{{ operator }}"), "alice");
    assert_eq!(push("{{ event_id }}"), e.id.to_string());
    assert_eq!(
        push("{{ project.id }} {{ project.name }} {{ project.public|tojson }}"),
        "3 prj false"
    );
    assert_eq!(
        push("{{ event_data.resources[0].tag }} {{ event_data.repository.repo_full_name }}"),
        "latest prj/repo1"
    );
    assert_eq!(
        push("{{ link }}"),
        format!(
            "https://registry.example.com/v2/prj/repo1/manifests/{}",
            e.digest.unwrap()
        )
    );
    let no_link = render(
        "{{ link|tojson }}",
        "application/json",
        &sample(EventKind::PushArtifact),
        &RenderCtx::default(),
    )
    .unwrap();
    assert_eq!(no_link.body, b"null");
    assert_eq!(no_link.content_type, "application/json");
}

#[test]
fn helper_tojson() {
    assert_eq!(push("{{ operator|tojson }}"), "\"alice\"");
    assert_eq!(
        push("{{ event_data.resources[0].tags|tojson }}"),
        "[\"latest\"]"
    );
    // a quote inside a value stays valid JSON
    let mut e = sample(EventKind::PushArtifact);
    e.operator = "al\"ice</b>".into();
    let p = render("{{ operator|tojson }}", "application/json", &e, &ctx()).unwrap();
    let back: String = serde_json::from_slice(&p.body).unwrap();
    assert_eq!(back, "al\"ice</b>");
}

#[test]
fn helper_shortdigest() {
    assert_eq!(
        push("{{ event_data.resources[0].digest|shortdigest }}"),
        "9e2c9d5f44ef"
    );
    assert_eq!(
        push("{{ event_data.resources[0].digest|shortdigest(7) }}"),
        "9e2c9d5"
    );
    assert_eq!(push("{{ 'abcdef0123456789'|shortdigest }}"), "abcdef012345");
}

#[test]
fn helper_datetimeformat() {
    assert_eq!(
        push("{{ occur_at|datetimeformat }}"),
        "2023-11-14 22:13:20 UTC"
    );
    assert_eq!(
        push("{{ occur_at_unix|datetimeformat('%d %b %Y') }}"),
        "14 Nov 2023"
    );
    let e = text(
        "{{ occur_at|datetimeformat('%Q') }}",
        EventKind::PushArtifact,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a valid strftime format"), "{e}");
    let e = text("{{ 'yesterday'|datetimeformat }}", EventKind::PushArtifact).unwrap_err();
    assert!(e.to_string().contains("not an RFC 3339 time"), "{e}");
}

#[test]
fn helper_default() {
    // absent on a push, present on a quota event
    let t = "{{ event_data.custom_attributes.Details|default('none') }}";
    assert_eq!(push(t), "none");
    assert!(
        text(t, EventKind::QuotaExceed)
            .unwrap()
            .starts_with("adding 2.1 MiB")
    );
    assert_eq!(push("{{ ''|default('empty', true) }}"), "empty");
    // undefined values can be tested
    assert_eq!(
        push("{% if event_data.scan %}scan{% else %}no scan{% endif %}"),
        "no scan"
    );
}

#[test]
fn a_typo_is_an_error_with_its_line() {
    let e = text(
        "line one\n{{ event_data.repositry.name }}",
        EventKind::PushArtifact,
    )
    .unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.to_string().starts_with("line 2: undefined value"), "{e}");
    let e = compile("{\n  \"a\": {{ type }\n}").unwrap_err();
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(e.to_string().contains("syntax error"), "{e}");
    // filters are looked up when rendering (as the policy API does against samples)
    let e = text("{{ type|nosuchfilter }}", EventKind::PushArtifact).unwrap_err();
    assert!(e.to_string().contains("unknown filter"), "{e}");
}

#[test]
fn including_a_file_is_refused() {
    for t in [
        "{% include '/etc/passwd' %}",
        "{% extends 'base.html' %}",
        "{% import 'macros.j2' as m %}",
    ] {
        let e = text(t, EventKind::PushArtifact).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read other templates or files"),
            "{t}: {e}"
        );
        assert_eq!(e.line(), Some(1), "{t}");
    }
}

#[test]
fn a_loop_that_does_not_end_runs_out_of_fuel() {
    let started = Instant::now();
    let e = text(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        EventKind::PushArtifact,
    )
    .unwrap_err();
    assert!(e.to_string().contains("too much work"), "{e}");
    assert!(started.elapsed() < TIME_LIMIT, "{:?}", started.elapsed());
    // macros calling themselves stop at the recursion limit
    let e = text(
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        EventKind::PushArtifact,
    )
    .unwrap_err();
    assert!(e.to_string().contains("recursion"), "{e}");
}

#[test]
fn megabytes_of_output_are_cut_off() {
    for t in [
        "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
        "{{ 'x' * 5000000 }}",
    ] {
        let e = text(t, EventKind::PushArtifact).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, TemplateError::OutputTooLarge) || msg.contains("too much work"),
            "{t}: {msg}"
        );
    }
    // output just under the limit is fine
    let ok = text(
        "{% for i in range(1000) %}{{ 'x' * 1000 }}{% endfor %}",
        EventKind::PushArtifact,
    )
    .unwrap();
    assert_eq!(ok.len(), 1_000_000);
}

#[test]
fn a_template_over_8_kib_is_refused() {
    let big = "x".repeat(MAX_TEMPLATE_BYTES + 1);
    assert!(matches!(
        compile(&big),
        Err(TemplateError::TooLong { len }) if len == MAX_TEMPLATE_BYTES + 1
    ));
    assert!(compile(&"x".repeat(MAX_TEMPLATE_BYTES)).is_ok());
}

#[test]
fn json_content_types_need_json_output() {
    let e = sample(EventKind::PushArtifact);
    let err = render(
        "{\"tag\": {{ event_data.resources[0].tag }}}",
        "application/json",
        &e,
        &ctx(),
    )
    .unwrap_err();
    match &err {
        TemplateError::NotJson { line, column, .. } => assert_eq!((*line, *column), (1, 9)),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("not JSON"), "{err}");
    // the same text is fine as text/plain, and +json types are JSON too
    assert!(render("{ {{ type }} }", "text/plain", &e, &ctx()).is_ok());
    assert!(render("{ {{ type }} }", "application/vnd.x+json", &e, &ctx()).is_err());
    assert!(is_json("application/json; charset=utf-8"));
    assert!(is_json("application/cloudevents+json"));
    assert!(!is_json("text/plain"));
}

#[test]
fn content_types_are_media_types() {
    assert!(check_content_type("application/json").is_ok());
    assert!(check_content_type("text/plain; charset=utf-8").is_ok());
    assert!(check_content_type("json").is_err());
    assert!(check_content_type("text/plain\r\nX-Evil: 1").is_err());
    assert!(check_content_type(&format!("text/{}", "x".repeat(300))).is_err());
}

/// The example template of docs/events.md renders every sample as JSON.
#[test]
fn the_example_template_renders_every_sample() {
    let t = crate::events::format::tests::example_template();
    for (name, e) in crate::events::format::samples() {
        let p = render(&t, DEFAULT_CONTENT_TYPE, &e, &ctx())
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let v: Value = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(v["event"], e.kind.harbor_type(), "{name}");
    }
}
