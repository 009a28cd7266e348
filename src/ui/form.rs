//! The Add / Edit webhook form (Harbor's add-webhook dialog, plus wharf's signing secret,
//! repository and tag filters and several endpoints); its Test Endpoint and Preview buttons
//! call [`super::test_endpoint`].
//!
//! A plain HTML form: it works without JavaScript (Add Endpoint and Test Endpoint post the form
//! back and it is shown again); with JavaScript, Test Endpoint answers in place (htmx) so the
//! typed values stay. The server's validation is the API's: a `400` naming a field
//! (`name: …`, `targets[1].address: …`) is shown next to that field, a `409` as "Name already
//! exists" next to Name.
//!
//! Secrets: a stored auth header or signing secret is never written into the page: it shows as
//! "set", an empty input keeps it (the API's `***`), "Remove" clears it. Values typed into the
//! form are not echoed back either: when the form comes back (an error, Add Endpoint without
//! JavaScript) they must be typed again, and the page says so.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, Method, StatusCode};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::page::{self, Ctx, UiError, text};
use super::test_endpoint::{
    Previewed, Tested, needs_stored, preview_result, run_preview, run_test, test_result,
};
use super::{project_param, session};
use crate::api::ApiState;
use crate::dispatch::policy::TargetKind;
use crate::events::EventKind;
use crate::events::format::PayloadFormat;

/// Most endpoints the form shows (the API allows 16 per policy).
const MAX_TARGETS: usize = 16;

/// One endpoint fieldset.
#[derive(Debug, Clone, Default)]
pub struct TargetForm {
    pub kind: TargetKind,
    pub address: String,
    pub payload_format: String,
    /// A `Custom` target's template (not a secret: rendered back).
    pub payload_template: String,
    /// A `Custom` target's content type (empty: the default).
    pub content_type: String,
    /// The event type Preview renders a sample of (empty: the form's first).
    pub preview_type: String,
    /// Typed now (never rendered back).
    pub auth_header: String,
    /// A stored one exists.
    pub auth_set: bool,
    pub auth_remove: bool,
    pub verify: bool,
    /// Typed now (never rendered back).
    pub secret: String,
    pub secret_set: bool,
    pub secret_remove: bool,
    /// Retired by its receiver (410).
    pub disabled: bool,
    pub reenable: bool,
    pub remove: bool,
}

impl TargetForm {
    fn blank() -> TargetForm {
        TargetForm {
            kind: TargetKind::Http,
            payload_format: PayloadFormat::Default.name().into(),
            verify: true,
            ..TargetForm::default()
        }
    }

    fn from_api(t: &Value) -> TargetForm {
        let set = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
        let kind = t["type"]
            .as_str()
            .and_then(TargetKind::parse)
            .unwrap_or_default();
        TargetForm {
            kind,
            address: text(&t["address"]),
            payload_format: t["payload_format"]
                .as_str()
                .unwrap_or(match kind {
                    TargetKind::Slack => PayloadFormat::Slack.name(),
                    TargetKind::Http => PayloadFormat::Default.name(),
                })
                .to_string(),
            payload_template: text(&t["payload_template"]),
            content_type: text(&t["content_type"]),
            auth_set: set(&t["auth_header"]),
            verify: !t["skip_cert_verify"].as_bool().unwrap_or(false),
            secret_set: set(&t["secret"]),
            disabled: t["disabled"].as_bool().unwrap_or(false),
            ..TargetForm::default()
        }
    }

    /// The target as the API takes it.
    pub fn to_api(&self) -> Value {
        let secret_field = |typed: &str, set: bool, remove: bool| -> Option<String> {
            if remove {
                Some(String::new())
            } else if !typed.trim().is_empty() {
                Some(typed.trim().to_string())
            } else if set {
                Some(crate::api::webhooks::MASK.to_string())
            } else {
                None
            }
        };
        let mut v = json!({
            "type": self.kind.name(),
            "address": self.address.trim(),
            "skip_cert_verify": !self.verify,
            "disabled": self.disabled && !self.reenable,
        });
        // a Slack endpoint: Harbor's message, or wharf's SlackRich
        v["payload_format"] = json!(self.payload_format);
        if self.is_custom() {
            v["payload_template"] = json!(self.payload_template);
            if !self.content_type.trim().is_empty() {
                v["content_type"] = json!(self.content_type.trim());
            }
        }
        if let Some(a) = secret_field(&self.auth_header, self.auth_set, self.auth_remove) {
            v["auth_header"] = json!(a);
        }
        if let Some(s) = secret_field(&self.secret, self.secret_set, self.secret_remove) {
            v["secret"] = json!(s);
        }
        v
    }

    pub fn is_custom(&self) -> bool {
        self.kind == TargetKind::Http && self.payload_format == PayloadFormat::Custom.name()
    }

    fn typed_secret(&self) -> bool {
        !self.auth_header.trim().is_empty() || !self.secret.trim().is_empty()
    }
}

/// The whole form.
#[derive(Debug, Clone, Default)]
pub struct PolicyForm {
    pub name: String,
    pub description: String,
    /// Kept as it is on Save (the list's Enable / Deactivate change it).
    pub enabled: bool,
    pub event_types: Vec<String>,
    pub repositories: String,
    pub tags: String,
    pub targets: Vec<TargetForm>,
}

impl PolicyForm {
    fn blank() -> PolicyForm {
        PolicyForm {
            enabled: true,
            event_types: EventKind::ALL
                .iter()
                .map(|k| k.harbor_type().to_string())
                .collect(),
            targets: vec![TargetForm::blank()],
            ..PolicyForm::default()
        }
    }

    fn from_api(p: &Value) -> PolicyForm {
        let list = |v: &Value| -> String {
            v.as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect::<Vec<_>>()
                .join(", ")
        };
        PolicyForm {
            name: text(&p["name"]),
            description: text(&p["description"]),
            enabled: p["enabled"].as_bool().unwrap_or(false),
            event_types: p["event_types"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect(),
            repositories: list(&p["filters"]["repositories"]),
            tags: list(&p["filters"]["tags"]),
            targets: p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(TargetForm::from_api)
                .collect(),
        }
    }

    /// Read a posted form (`application/x-www-form-urlencoded`).
    pub fn parse(body: &[u8]) -> (PolicyForm, String) {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let on = |k: &str| pairs.iter().any(|(key, _)| key == k);
        let count = get("count").parse::<usize>().unwrap_or(1).min(MAX_TARGETS);
        let targets = (0..count)
            .map(|i| {
                let f = |name: &str| format!("t{i}.{name}");
                let kind = TargetKind::parse(&get(&f("type"))).unwrap_or_default();
                // a Slack endpoint has its own layout choice (Slack or SlackRich)
                let slack_rich = get(&f("slack_format")) == PayloadFormat::SlackRich.name();
                let payload_format = match (kind, slack_rich) {
                    (TargetKind::Slack, true) => PayloadFormat::SlackRich.name().to_string(),
                    (TargetKind::Slack, false) => PayloadFormat::Slack.name().to_string(),
                    (TargetKind::Http, _) => get(&f("payload_format")),
                };
                TargetForm {
                    kind,
                    address: get(&f("address")),
                    payload_format,
                    payload_template: get(&f("payload_template")),
                    content_type: get(&f("content_type")),
                    preview_type: get(&f("preview_type")),
                    auth_header: get(&f("auth_header")),
                    auth_set: get(&f("auth_set")) == "1",
                    auth_remove: on(&f("auth_remove")),
                    verify: on(&f("verify")),
                    secret: get(&f("secret")),
                    secret_set: get(&f("secret_set")) == "1",
                    secret_remove: on(&f("secret_remove")),
                    disabled: get(&f("disabled")) == "1",
                    reenable: on(&f("reenable")),
                    remove: on(&f("remove")),
                }
            })
            .collect();
        let form = PolicyForm {
            name: get("name"),
            description: get("description"),
            enabled: get("enabled") != "false",
            event_types: pairs
                .iter()
                .filter(|(k, _)| k == "event_type")
                .map(|(_, v)| v.clone())
                .collect(),
            repositories: get("repositories"),
            tags: get("tags"),
            targets,
        };
        (form, get("action"))
    }

    /// The policy as the API takes it, and the form index of each target sent.
    pub fn to_api(&self) -> (Value, Vec<usize>) {
        let globs = |s: &str| -> Vec<String> {
            s.split([',', '\n', ' '])
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect()
        };
        let kept: Vec<usize> = (0..self.targets.len())
            .filter(|i| self.targets.get(*i).is_some_and(|t| !t.remove))
            .collect();
        let targets: Vec<Value> = kept
            .iter()
            .filter_map(|i| self.targets.get(*i))
            .map(TargetForm::to_api)
            .collect();
        let v = json!({
            "name": self.name.trim(),
            "description": self.description,
            "enabled": self.enabled,
            "event_types": self.event_types,
            "targets": targets,
            "filters": {"repositories": globs(&self.repositories), "tags": globs(&self.tags)},
        });
        (v, kept)
    }
}

/// Messages next to fields, by form key (`name`, `event_types`, `t0.address`, …; `form` for
/// the rest).
#[derive(Debug, Clone, Default)]
pub struct Errors(Vec<(String, String)>);

impl Errors {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, m)| m.as_str())
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Place an API error message: `field: message` on its field, anything else on the form.
    fn from_api(status: StatusCode, message: &str, sent: &[usize]) -> Errors {
        if status == StatusCode::CONFLICT {
            return Errors(vec![("name".into(), "Name already exists".into())]);
        }
        let key = message.split_once(": ").and_then(|(field, _)| {
            if field == "name" {
                return Some("name".to_string());
            }
            if field == "event_types" || field.starts_with("event_types[") {
                return Some("event_types".to_string());
            }
            if field.starts_with("filters.repositories") {
                return Some("repositories".to_string());
            }
            if field.starts_with("filters.tags") {
                return Some("tags".to_string());
            }
            let rest = field.strip_prefix("targets[")?;
            let (i, sub) = rest.split_once("].")?;
            let form_index = sent.get(i.parse::<usize>().ok()?)?;
            let sub = match sub {
                "address" | "auth_header" | "payload_format" | "payload_template"
                | "content_type" | "type" | "secret" => sub,
                _ => return None,
            };
            Some(format!("t{form_index}.{sub}"))
        });
        Errors(vec![(
            key.unwrap_or_else(|| "form".into()),
            message.to_string(),
        )])
    }
}

/// What a button asked for, shown with the form.
#[derive(Debug, Clone)]
enum Answer {
    /// Test Endpoint; `true`: of the stored policy.
    Tested(Tested, bool),
    Previewed(Previewed),
}

fn field_error(errors: &Errors, key: &str) -> Markup {
    html! {
        @if let Some(m) = errors.get(key) {
            p.field-error id=(format!("{key}-error")) { (m) }
        }
    }
}

fn target_fieldset(
    i: usize,
    t: &TargetForm,
    errors: &Errors,
    action: &str,
    preview: Option<&Previewed>,
) -> Markup {
    let id = |f: &str| format!("t{i}-{f}");
    let name = |f: &str| format!("t{i}.{f}");
    let described = |f: &str| errors.get(&name(f)).map(|_| format!("t{i}.{f}-error"));
    html! {
        fieldset.target data-target=(i) {
            legend { "Endpoint " (i + 1) }
            @if t.disabled {
                p.note.bad {
                    (page::badge("disabled (410)"))
                    " Its receiver answered 410 Gone: nothing is sent to it until it is re-enabled."
                }
                input type="hidden" name=(name("disabled")) value="1";
                div.check {
                    input type="checkbox" id=(id("reenable")) name=(name("reenable")) value="1" checked[t.reenable];
                    label for=(id("reenable")) { "Re-enable this endpoint" }
                }
            }
            div.field {
                label for=(id("type")) { "Notify Type" }
                select id=(id("type")) name=(name("type")) data-notify-type {
                    @for k in TargetKind::ALL {
                        option value=(k.name()) selected[t.kind == k] { (k.name()) }
                    }
                }
                (field_error(errors, &name("type")))
            }
            div.field data-http-only {
                label for=(id("payload_format")) { "Payload Format" }
                select id=(id("payload_format")) name=(name("payload_format")) data-payload-format {
                    @for f in PayloadFormat::HTTP {
                        option value=(f.name()) selected[t.payload_format == f.name()] { (f.name()) }
                    }
                }
                (field_error(errors, &name("payload_format")))
            }
            div.field data-slack-only {
                label for=(id("slack_format")) { "Slack Layout" }
                select id=(id("slack_format")) name=(name("slack_format")) {
                    @let rich = t.payload_format == PayloadFormat::SlackRich.name();
                    option value=(PayloadFormat::Slack.name()) selected[!rich] { "Slack (Harbor's message)" }
                    option value=(PayloadFormat::SlackRich.name()) selected[rich] { "SlackRich (wharf's layout)" }
                }
            }
            div.custom data-custom-only {
                div.field {
                    label for=(id("payload_template")) { "Payload Template" }
                    textarea.code id=(id("payload_template")) name=(name("payload_template")) rows="10"
                        spellcheck="false" autocomplete="off"
                        placeholder=r#"{"text": {{ (type ~ " " ~ event_data.repository.repo_full_name) | tojson }}}"#
                        aria-invalid=[errors.get(&name("payload_template")).map(|_| "true")]
                        aria-describedby=(described("payload_template").map_or_else(|| id("template-hint"), |e| format!("{} {e}", id("template-hint")))) {
                        (t.payload_template)
                    }
                    p.hint id=(id("template-hint")) {
                        "For the Custom format only: the request body, a Jinja2 template (minijinja) of the event's "
                        code { "type" } ", " code { "operator" } ", " code { "event_data" } ", … "
                        "Nothing is escaped: write JSON values with " code { "tojson" } ". "
                        "Preview renders it for a sample event without sending anything."
                    }
                    (field_error(errors, &name("payload_template")))
                }
                div.field {
                    label for=(id("content_type")) { "Content Type" }
                    input type="text" id=(id("content_type")) name=(name("content_type")) value=(t.content_type)
                        placeholder="application/json"
                        aria-invalid=[errors.get(&name("content_type")).map(|_| "true")]
                        aria-describedby=[described("content_type")];
                    (field_error(errors, &name("content_type")))
                }
            }
            div.field {
                label for=(id("address")) { "Endpoint URL" }
                input type="url" id=(id("address")) name=(name("address")) value=(t.address)
                    placeholder="https://hooks.example.com/harbor" required
                    aria-invalid=[errors.get(&name("address")).map(|_| "true")]
                    aria-describedby=[described("address")];
                (field_error(errors, &name("address")))
            }
            div.field data-http-only {
                label for=(id("auth_header")) { "Auth Header" }
                input type="password" id=(id("auth_header")) name=(name("auth_header")) autocomplete="off"
                    placeholder=(if t.auth_set { "set — leave empty to keep" } else { "e.g. Bearer <token>" })
                    aria-invalid=[errors.get(&name("auth_header")).map(|_| "true")]
                    aria-describedby=[described("auth_header")];
                @if t.auth_set {
                    input type="hidden" name=(name("auth_set")) value="1";
                    p.hint { "A stored auth header is " strong { "set" } ". A new Endpoint URL needs it typed again." }
                    div.check {
                        input type="checkbox" id=(id("auth_remove")) name=(name("auth_remove")) value="1" checked[t.auth_remove];
                        label for=(id("auth_remove")) { "Remove auth header" }
                    }
                }
                (field_error(errors, &name("auth_header")))
            }
            div.check {
                input type="checkbox" id=(id("verify")) name=(name("verify")) value="1" checked[t.verify];
                label for=(id("verify")) { "Verify Remote Certificate" }
            }
            div.field {
                label for=(id("secret")) { "Signing Secret" }
                div.inline {
                    input type="password" id=(id("secret")) name=(name("secret")) autocomplete="off"
                        placeholder=(if t.secret_set { "set — leave empty to keep" } else { "none: requests are not signed" })
                        aria-describedby=(id("secret-hint"));
                    button type="button" data-generate=(id("secret")) hidden { "Generate" }
                }
                p.hint id=(id("secret-hint")) {
                    "Signs each request (Standard Webhooks " code { "webhook-signature" } "). "
                    "Generate shows a new secret once, in your browser: copy it to your receiver before saving."
                }
                @if t.secret_set {
                    input type="hidden" name=(name("secret_set")) value="1";
                    p.hint { "A signing secret is " strong { "set" } "." }
                    div.check {
                        input type="checkbox" id=(id("secret_remove")) name=(name("secret_remove")) value="1" checked[t.secret_remove];
                        label for=(id("secret_remove")) { "Remove signing secret" }
                    }
                }
                (field_error(errors, &name("secret")))
            }
            div.preview {
                div.field {
                    label for=(id("preview_type")) { "Preview event type" }
                    select id=(id("preview_type")) name=(name("preview_type")) {
                        option value="" selected[t.preview_type.is_empty()] { "the first checked" }
                        @for k in EventKind::ALL.iter().filter(|k| k.produced()) {
                            option value=(k.harbor_type()) selected[t.preview_type == k.harbor_type()] { (k.harbor_type()) }
                        }
                    }
                }
                button type="submit" name="action" value=(format!("preview:{i}")) formnovalidate
                    hx-post=(action) hx-target=(format!("#{}", id("preview"))) hx-swap="innerHTML"
                    hx-vals=(format!(r#"{{"action":"preview:{i}"}}"#)) {
                    "Preview"
                }
                div id=(id("preview")) aria-live="polite" {
                    @if let Some(p) = preview { (preview_result(p)) }
                }
            }
            @if i > 0 || t.remove {
                div.check {
                    input type="checkbox" id=(id("remove")) name=(name("remove")) value="1" checked[t.remove];
                    label for=(id("remove")) { "Remove this endpoint" }
                }
            }
        }
    }
}

/// Where the form posts, and what kind it is.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Create,
    Edit(i64),
}

fn render(
    ctx: &Ctx,
    project: &str,
    mode: Mode,
    form: &PolicyForm,
    errors: &Errors,
    answer: Option<&Answer>,
    retype: bool,
) -> Markup {
    let (tested, preview) = match answer {
        Some(Answer::Tested(t, stored)) => (Some((t, *stored)), None),
        Some(Answer::Previewed(p)) => (None, Some(p)),
        None => (None, None),
    };
    let list = format!("/ui/projects/{project}/webhooks");
    let (title, action, submit) = match mode {
        Mode::Create => ("New Webhook".to_string(), format!("{list}/new"), "Add"),
        Mode::Edit(id) => (
            format!("Edit webhook {}", form.name),
            format!("{list}/{id}/edit"),
            "Save",
        ),
    };
    let body = html! {
        h1 { (title) }
        @if let Some(m) = errors.get("form") {
            div.note.bad role="alert" { (m) }
        } @else if !errors.is_empty() {
            div.note.bad role="alert" { "The webhook was not saved: see the marked fields." }
        }
        @if retype {
            div.note role="status" { "Type the Auth Header and Signing Secret again: values you typed are never sent back to the browser." }
        }
        form.policy method="post" action=(action) novalidate {
            input type="hidden" name="enabled" value=(if form.enabled { "true" } else { "false" });
            input type="hidden" name="count" value=(form.targets.len());
            div.field {
                label for="name" { "Name" }
                input #name type="text" name="name" value=(form.name) required maxlength="256"
                    aria-invalid=[errors.get("name").map(|_| "true")]
                    aria-describedby=[errors.get("name").map(|_| "name-error")];
                (field_error(errors, "name"))
            }
            div.field {
                label for="description" { "Description" }
                textarea #description name="description" rows="2" { (form.description) }
            }
            fieldset.events aria-describedby=[errors.get("event_types").map(|_| "event_types-error")] {
                legend { "Event Type" }
                div.grid {
                    @for k in EventKind::ALL {
                        @let t = k.harbor_type();
                        div.check {
                            input type="checkbox" id=(format!("ev-{t}")) name="event_type" value=(t)
                                checked[form.event_types.iter().any(|e| e == t)];
                            label for=(format!("ev-{t}")) { (t) }
                        }
                    }
                }
                (field_error(errors, "event_types"))
            }
            @for (i, t) in form.targets.iter().enumerate() {
                (target_fieldset(i, t, errors, &action, preview.filter(|p| p.index == i)))
            }
            @if form.targets.len() < MAX_TARGETS {
                button type="submit" name="action" value="add_target" formnovalidate { "Add Endpoint" }
            }
            fieldset.filters {
                legend { "Filters" }
                div.field {
                    label for="repositories" { "Repository filter" }
                    input #repositories type="text" name="repositories" value=(form.repositories)
                        placeholder="e.g. team/*, prj/app (empty: every repository)";
                    (field_error(errors, "repositories"))
                }
                div.field {
                    label for="tags" { "Tag filter" }
                    input #tags type="text" name="tags" value=(form.tags) placeholder="e.g. v*, release-* (empty: every tag)";
                    (field_error(errors, "tags"))
                }
            }
            div #test-result aria-live="polite" {
                @if let Some((t, stored)) = tested { (test_result(t, stored)) }
            }
            div.buttons {
                a.button href=(list) { "Cancel" }
                button type="submit" name="action" value="test" formnovalidate
                    hx-post=(action) hx-target="#test-result" hx-swap="innerHTML" hx-vals=r#"{"action":"test"}"# {
                    "Test Endpoint"
                }
                button.primary type="submit" name="action" value="save" { (submit) }
            }
        }
    };
    page::page(ctx, &title, &[("Projects", "/ui/"), (project, &list)], body)
}

/// `GET /ui/projects/{p}/webhooks/new`
pub async fn new_form(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    // the project's webhooks must be the caller's (403 otherwise), before any form is shown
    api.get_ok(&format!(
        "/api/v2.0/projects/{project}/webhook/policies?page_size=1"
    ))
    .await?;
    let form = PolicyForm::blank();
    Ok(page::respond(
        StatusCode::OK,
        render(
            &ctx,
            &project,
            Mode::Create,
            &form,
            &Errors::default(),
            None,
            false,
        ),
    ))
}

/// `GET /ui/projects/{p}/webhooks/{id}/edit`
pub async fn edit_form(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let p = api
        .get_ok(&format!(
            "/api/v2.0/projects/{project}/webhook/policies/{id}"
        ))
        .await?;
    let form = PolicyForm::from_api(&p);
    Ok(page::respond(
        StatusCode::OK,
        render(
            &ctx,
            &project,
            Mode::Edit(id),
            &form,
            &Errors::default(),
            None,
            false,
        ),
    ))
}

async fn submit(
    s: ApiState,
    headers: HeaderMap,
    project: String,
    mode: Mode,
    body: &[u8],
) -> Result<Response, UiError> {
    let project = project_param(&project)?;
    let (ctx, api) = session(&s, &headers).await?;
    let (mut form, action) = PolicyForm::parse(body);
    let partial = headers.contains_key("hx-request");
    let retype = form.targets.iter().any(TargetForm::typed_secret);
    let show = |form: &PolicyForm, errors: &Errors, answer: Option<&Answer>, status| {
        page::respond(
            status,
            render(&ctx, &project, mode, form, errors, answer, retype),
        )
    };
    match action.as_str() {
        "add_target" => {
            if form.targets.len() < MAX_TARGETS {
                form.targets.push(TargetForm::blank());
            }
            Ok(show(&form, &Errors::default(), None, StatusCode::OK))
        }
        "test" => {
            let stored = match mode {
                Mode::Edit(id) if needs_stored(&form) => Some(id),
                _ => None,
            };
            let tested = run_test(&api, &project, &form, stored).await;
            if partial {
                // htmx: only the result, the form stays as typed
                return Ok(page::respond(
                    StatusCode::OK,
                    test_result(&tested, stored.is_some()),
                ));
            }
            Ok(show(
                &form,
                &Errors::default(),
                Some(&Answer::Tested(tested, stored.is_some())),
                StatusCode::OK,
            ))
        }
        a if a.starts_with("preview:") => {
            let index = a
                .strip_prefix("preview:")
                .and_then(|i| i.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            let previewed = run_preview(&api, &project, &form, index).await;
            if partial {
                // htmx: only the result, the form stays as typed
                return Ok(page::respond(StatusCode::OK, preview_result(&previewed)));
            }
            Ok(show(
                &form,
                &Errors::default(),
                Some(&Answer::Previewed(previewed)),
                StatusCode::OK,
            ))
        }
        _ => {
            let (v, sent) = form.to_api();
            let base = format!("/api/v2.0/projects/{project}/webhook/policies");
            let answer = match mode {
                Mode::Create => api.call(Method::POST, &base, Some(&v)).await?,
                Mode::Edit(id) => {
                    api.call(Method::PUT, &format!("{base}/{id}"), Some(&v))
                        .await?
                }
            };
            match answer.status {
                s if s.is_success() => {
                    Ok(Redirect::to(&format!("/ui/projects/{project}/webhooks")).into_response())
                }
                s @ (StatusCode::BAD_REQUEST | StatusCode::CONFLICT) => {
                    let errors = Errors::from_api(s, &answer.message(), &sent);
                    Ok(show(&form, &errors, None, s))
                }
                _ => Err(answer.error()),
            }
        }
    }
}

/// `POST /ui/projects/{p}/webhooks/new`
pub async fn create(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(project): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, UiError> {
    submit(s, headers, project, Mode::Create, &body).await
}

/// `POST /ui/projects/{p}/webhooks/{id}/edit`
pub async fn update(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((project, id)): Path<(String, i64)>,
    body: axum::body::Bytes,
) -> Result<Response, UiError> {
    submit(s, headers, project, Mode::Edit(id), &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_secrets_go_back_masked_and_removed_ones_empty() {
        let body = b"name=n&count=2&event_type=PUSH_ARTIFACT&t0.type=http&t0.address=http%3A%2F%2Fa&t0.payload_format=CloudEvents&t0.auth_set=1&t0.secret_set=1&t0.secret_remove=1&t0.verify=1&t1.type=slack&t1.address=http%3A%2F%2Fb&t1.remove=1&action=save";
        let (form, action) = PolicyForm::parse(body);
        assert_eq!(action, "save");
        let (v, sent) = form.to_api();
        assert_eq!(sent, vec![0]);
        let t = &v["targets"][0];
        assert_eq!(t["auth_header"], "***");
        assert_eq!(t["secret"], "");
        assert_eq!(t["skip_cert_verify"], false);
        assert_eq!(t["payload_format"], "CloudEvents");
        assert_eq!(v["event_types"], json!(["PUSH_ARTIFACT"]));
        assert_eq!(v["enabled"], true);
    }

    #[test]
    fn custom_fields_go_only_with_custom_and_slack_keeps_its_layout() {
        let body = b"name=n&count=3&event_type=PUSH_ARTIFACT\
&t0.type=http&t0.address=http%3A%2F%2Fa&t0.payload_format=Custom&t0.payload_template=%7B%7B+type+%7D%7D&t0.content_type=+text%2Fplain+\
&t1.type=http&t1.address=http%3A%2F%2Fb&t1.payload_format=Default&t1.payload_template=left+over&t1.content_type=text%2Fplain\
&t2.type=slack&t2.address=http%3A%2F%2Fc&t2.payload_format=Custom&t2.slack_format=SlackRich&action=save";
        let (form, _) = PolicyForm::parse(body);
        let (v, _) = form.to_api();
        let t = &v["targets"];
        assert_eq!(t[0]["payload_format"], "Custom");
        assert_eq!(t[0]["payload_template"], "{{ type }}");
        assert_eq!(t[0]["content_type"], "text/plain");
        assert_eq!(t[1]["payload_format"], "Default");
        assert!(t[1].get("payload_template").is_none() && t[1].get("content_type").is_none());
        assert_eq!(t[2]["payload_format"], "SlackRich");
        assert!(t[2].get("payload_template").is_none());
        // a stored SlackRich target comes back as SlackRich, a plain one as Harbor's Slack
        let rich = TargetForm::from_api(
            &json!({"type": "slack", "address": "http://c", "payload_format": "SlackRich"}),
        );
        assert_eq!(rich.to_api()["payload_format"], "SlackRich");
        let plain = TargetForm::from_api(&json!({"type": "slack", "address": "http://c"}));
        assert_eq!(plain.to_api()["payload_format"], "Slack");
        // the template is shown back (it is not a secret), escaped
        let custom = TargetForm::from_api(
            &json!({"type": "http", "address": "http://a", "payload_format": "Custom", "payload_template": "<b>{{ type }}</b>"}),
        );
        let html = target_fieldset(0, &custom, &Errors::default(), "/x", None).into_string();
        assert!(html.contains("&lt;b&gt;{{ type }}&lt;/b&gt;"), "{html}");
    }

    #[test]
    fn api_errors_land_on_their_fields() {
        let e = Errors::from_api(StatusCode::BAD_REQUEST, "targets[0].address: blocked", &[2]);
        assert_eq!(e.get("t2.address"), Some("targets[0].address: blocked"));
        let e = Errors::from_api(StatusCode::CONFLICT, "name: exists", &[0]);
        assert_eq!(e.get("name"), Some("Name already exists"));
        let e = Errors::from_api(StatusCode::BAD_REQUEST, "event_types: at least one", &[0]);
        assert!(e.get("event_types").is_some());
        let e = Errors::from_api(StatusCode::BAD_REQUEST, "something else", &[0]);
        assert!(e.get("form").is_some());
    }

    #[test]
    fn typed_secrets_are_not_rendered_back() {
        let body = b"name=n&count=1&t0.address=http%3A%2F%2Fa&t0.auth_header=Bearer+s3cr3t&t0.secret=whsec_abc&action=add_target";
        let (form, _) = PolicyForm::parse(body);
        let ctx = Ctx {
            caller: crate::api::auth::Caller::Admin,
            notifications_on: true,
        };
        let html = render(
            &ctx,
            "prj",
            Mode::Create,
            &form,
            &Errors::default(),
            None,
            true,
        )
        .into_string();
        assert!(!html.contains("s3cr3t"));
        assert!(!html.contains("whsec_abc"));
        assert!(html.contains("http://a"));
    }
}
