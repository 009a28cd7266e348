//! Webhook policies: which events of a project go to which targets, in which format.

use serde::{Deserialize, Serialize};

use crate::events::format::{self, Custom, Payload, PayloadFormat, RenderCtx, RenderError};
use crate::events::template::DEFAULT_CONTENT_TYPE;
use crate::events::{Event, EventKind};

/// How a target is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    #[default]
    Http,
    Slack,
}

impl TargetKind {
    pub const ALL: [TargetKind; 2] = [TargetKind::Http, TargetKind::Slack];

    /// The API's name (`type`): `http` or `slack`.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Http => "http",
            TargetKind::Slack => "slack",
        }
    }

    /// The kind named `name` ([`TargetKind::name`]).
    pub fn parse(name: &str) -> Option<TargetKind> {
        TargetKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One endpoint of a policy (secrets included: this is the stored form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "type")]
    pub kind: TargetKind,
    pub address: String,
    /// Sent as the `Authorization` header.
    #[serde(default)]
    pub auth_header: Option<String>,
    #[serde(default)]
    pub skip_cert_verify: bool,
    /// Payload format of an http target; a Slack target gets Harbor's Slack message, or
    /// wharf's `SlackRich` layout when it asks for it.
    #[serde(default)]
    pub payload_format: Option<PayloadFormat>,
    /// The template of a `Custom` target (checked when the policy is saved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_template: Option<String>,
    /// The Content-Type of a `Custom` target's requests (default `application/json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Standard Webhooks signing secret (`whsec_<base64>` or any string).
    #[serde(default)]
    pub secret: Option<String>,
    /// Set when the target answered 410 Gone: no more deliveries until re-enabled.
    #[serde(default)]
    pub disabled: bool,
}

impl Target {
    /// An enabled http target with the Default format and no secrets.
    pub fn http(address: impl Into<String>) -> Target {
        Target {
            kind: TargetKind::Http,
            address: address.into(),
            auth_header: None,
            skip_cert_verify: false,
            payload_format: None,
            payload_template: None,
            content_type: None,
            secret: None,
            disabled: false,
        }
    }

    /// The template of a `Custom` target, with its content type.
    pub fn custom(&self) -> Option<Custom<'_>> {
        match self.format() {
            PayloadFormat::Custom => self.payload_template.as_deref().map(|t| Custom {
                template: t,
                content_type: self.content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE),
            }),
            _ => None,
        }
    }

    /// The body this target gets for `event`.
    pub fn render(&self, event: &Event, ctx: &RenderCtx) -> Result<Payload, RenderError> {
        format::render(event, self.format(), self.custom(), ctx)
    }

    /// [`Target::render`] for async callers: a `Custom` target's template is rendered on a
    /// blocking thread (a render may use its whole fuel: milliseconds of CPU); the built-in
    /// formats are rendered in place.
    pub async fn render_async(
        &self,
        event: &Event,
        ctx: &RenderCtx,
    ) -> Result<Payload, RenderError> {
        if self.custom().is_none() {
            return self.render(event, ctx);
        }
        let (target, event, ctx) = (self.clone(), event.clone(), ctx.clone());
        tokio::task::spawn_blocking(move || target.render(&event, &ctx))
            .await
            .map_err(RenderError::Aborted)?
    }

    /// The format this target receives.
    pub fn format(&self) -> PayloadFormat {
        match self.kind {
            TargetKind::Slack => match self.payload_format {
                Some(PayloadFormat::SlackRich) => PayloadFormat::SlackRich,
                _ => PayloadFormat::Slack,
            },
            TargetKind::Http => self.payload_format.unwrap_or(PayloadFormat::Default),
        }
    }
}

/// Repository and tag globs (`*`, `**`, `?`, `[…]`, `{a,b}`); empty = everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Matched against the repository name without the project (`team/app`) and with it
    /// (`prj/team/app`); one match is enough.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Matched against each tag of the event (a chart's version is its tag); an event without
    /// tags does not pass a tag filter.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Filters {
    pub fn matches(&self, e: &Event) -> bool {
        let repo_ok = self.repositories.is_empty()
            || self.repositories.iter().any(|p| {
                crate::glob::matches(p, e.short_name()) || crate::glob::matches(p, &e.repository)
            });
        let tag_ok = self.tags.is_empty()
            || e.tags
                .iter()
                .any(|t| self.tags.iter().any(|p| crate::glob::matches(p, t)));
        repo_ok && tag_ok
    }
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub id: i64,
    pub project: String,
    pub project_id: i64,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub event_types: Vec<EventKind>,
    pub targets: Vec<Target>,
    pub filters: Filters,
    pub creator: String,
    /// unix ms
    pub created_at: i64,
    pub updated_at: i64,
}

impl Policy {
    /// An enabled policy of `project` for `event_types`, to `targets`, not stored yet (id 0),
    /// created by `admin`: what tests start from.
    #[cfg(test)]
    pub fn sample(project: &str, event_types: Vec<EventKind>, targets: Vec<Target>) -> Policy {
        Policy {
            id: 0,
            project: project.into(),
            project_id: 0,
            name: "p".into(),
            description: String::new(),
            enabled: true,
            event_types,
            targets,
            filters: Filters::default(),
            creator: "admin".into(),
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Does this policy want `e`?
    pub fn wants(&self, e: &Event) -> bool {
        self.enabled
            && self.project == e.project
            && self.event_types.contains(&e.kind)
            && self.filters.matches(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(repo: &str, tags: &[&str]) -> Event {
        let mut e = Event::new(
            EventKind::PushArtifact,
            &crate::route::Repository::parse(repo).unwrap(),
            "u",
        );
        e.tags = tags.iter().map(|t| t.to_string()).collect();
        e
    }

    /// Targets stored before the chat formats and templates existed still read, and the new
    /// fields are left out of the stored JSON when unset.
    #[test]
    fn target_kinds_are_named_as_the_api_and_the_store_name_them() {
        for k in TargetKind::ALL {
            assert_eq!(TargetKind::parse(k.name()), Some(k));
            assert_eq!(serde_json::json!(k), serde_json::json!(k.name()));
        }
        assert_eq!(TargetKind::parse("Slack"), None);
        assert_eq!(TargetKind::default(), TargetKind::Http);
    }

    #[test]
    fn stored_targets_old_and_new_read_back() {
        let old = r#"{"type":"http","address":"http://a/","auth_header":null,"skip_cert_verify":false,"payload_format":"CloudEvents","secret":null,"disabled":false}"#;
        let t: Target = serde_json::from_str(old).unwrap();
        assert_eq!(t.format(), PayloadFormat::CloudEvents);
        assert_eq!(
            (t.payload_template.as_deref(), t.custom().is_none()),
            (None, true)
        );
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("payload_template") && !json.contains("content_type"));

        let custom = Target {
            payload_format: Some(PayloadFormat::Custom),
            payload_template: Some("{{ type }}".into()),
            ..Target::http("http://a/")
        };
        let back: Target = serde_json::from_str(&serde_json::to_string(&custom).unwrap()).unwrap();
        assert_eq!(back, custom);
        let c = back.custom().unwrap();
        assert_eq!(
            (c.template, c.content_type),
            ("{{ type }}", "application/json")
        );
        let p = back
            .render(
                &event("prj/app", &["1"]),
                &crate::events::format::RenderCtx::default(),
            )
            .unwrap_err();
        // `{{ type }}` is not JSON
        assert!(p.to_string().contains("not JSON"), "{p}");

        for f in PayloadFormat::CHAT {
            let t: Target = serde_json::from_str(&format!(
                r#"{{"type":"http","address":"http://a/","payload_format":"{}"}}"#,
                f.name()
            ))
            .unwrap();
            assert_eq!(t.format(), f);
        }
    }

    #[test]
    fn filters_match_short_or_full_names_and_any_tag() {
        let f = Filters {
            repositories: vec!["team/*".into()],
            tags: vec!["v*".into()],
        };
        assert!(f.matches(&event("prj/team/app", &["v1"])));
        assert!(!f.matches(&event("prj/other/app", &["v1"])));
        assert!(!f.matches(&event("prj/team/app", &["latest"])));
        assert!(!f.matches(&event("prj/team/app", &[])));
        let full = Filters {
            repositories: vec!["prj/**".into()],
            tags: vec![],
        };
        assert!(full.matches(&event("prj/a/b/c", &[])));
        assert!(Filters::default().matches(&event("prj/x", &[])));
    }

    #[test]
    fn policy_wants_its_project_types_and_filters() {
        let p = Policy {
            id: 1,
            project: "prj".into(),
            project_id: 1,
            name: "n".into(),
            description: String::new(),
            enabled: true,
            event_types: vec![EventKind::PushArtifact],
            targets: vec![],
            filters: Filters::default(),
            creator: "admin".into(),
            created_at: 0,
            updated_at: 0,
        };
        assert!(p.wants(&event("prj/app", &["1"])));
        assert!(!p.wants(&event("other/app", &["1"])));
        let mut pull = event("prj/app", &["1"]);
        pull.kind = EventKind::PullArtifact;
        assert!(!p.wants(&pull));
        let off = Policy {
            enabled: false,
            ..p
        };
        assert!(!off.wants(&event("prj/app", &["1"])));
    }
}
