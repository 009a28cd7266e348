//! `Legacy`: the seed's (Harbor 1.10 documentation) `{"event_type": "pushImage", "events": [{project,
//! repo_name, tag, full_name, trigger_time, image_id, project_type, …}]}`, one entry per tag, with
//! every seed field of every kind added.

use serde_json::{Map, Value, json};

use super::put;
use crate::events::Event;

pub(super) fn legacy(e: &Event) -> Value {
    let tags: Vec<Option<&str>> = if e.tags.is_empty() {
        vec![None]
    } else {
        e.tags.iter().map(|t| Some(t.as_str())).collect()
    };
    let events: Vec<Value> = tags
        .into_iter()
        .map(|tag| {
            let mut m = Map::new();
            m.insert("project".into(), json!(e.project));
            let repo_name = match &e.chart {
                Some(c) if e.kind.is_chart() && !c.name.is_empty() => c.name.clone(),
                _ => e.short_name().to_string(),
            };
            let full_name = e.repository.clone();
            m.insert("repo_name".into(), json!(repo_name));
            let tag_text = tag
                .map(str::to_string)
                .or_else(|| {
                    e.chart
                        .as_ref()
                        .filter(|_| e.kind.is_chart())
                        .map(|c| c.version.clone())
                })
                .or_else(|| e.digest.clone())
                .unwrap_or_default();
            m.insert("tag".into(), json!(tag_text));
            m.insert("full_name".into(), json!(full_name));
            m.insert("trigger_time".into(), json!(e.occurred_at.timestamp()));
            put(
                &mut m,
                "image_id",
                e.digest
                    .as_deref()
                    .map(|d| d.split_once(':').map(|(_, h)| h).unwrap_or(d)),
            );
            m.insert(
                "project_type".into(),
                json!(if e.public { "Public" } else { "Private" }),
            );
            // additions: every seed field of every event kind has a place here too
            m.insert("event_id".into(), json!(e.id.to_string()));
            if e.test {
                m.insert("test".into(), json!(true));
            }
            m.insert("operator".into(), json!(e.operator));
            put(&mut m, "digest", e.digest.as_ref());
            let image_name = match tag {
                Some(t) => format!("{}:{t}", e.repository),
                None => e.image_name(),
            };
            m.insert("image_name".into(), json!(image_name));
            m.insert("tags".into(), json!(e.tags));
            let url = if e.kind.is_chart() {
                e.resource_url.clone()
            } else {
                let host = e.resource_url.split('/').next().unwrap_or_default();
                Event::oci_resource_url(host, &e.repository, tag, e.digest.as_deref())
            };
            m.insert("resource_url".into(), json!(url));
            put(&mut m, "media_type", e.media_type.as_ref());
            put(&mut m, "size", e.size);
            if !e.platforms.is_empty() {
                m.insert("platforms".into(), json!(e.platforms));
            }
            if let Some(c) = e.chart.as_ref().filter(|_| e.kind.is_chart()) {
                m.insert("chart_name".into(), json!(c.name));
                m.insert("chart_version".into(), json!(c.version));
                m.insert("chart_type".into(), json!(c.chart_type));
                put(&mut m, "app_version", c.app_version.as_ref());
                put(&mut m, "chart_size", c.size.or(e.size));
            }
            if let Some(s) = &e.scan {
                m.insert("scan_status".into(), json!(s.status.name()));
                m.insert("scan_type".into(), json!(s.scan_type.name()));
                m.insert("severity".into(), json!(s.severity));
                // the seed's critical / major / minor: Critical, High, Medium + Low
                m.insert("critical".into(), json!(s.counts.critical));
                m.insert("major".into(), json!(s.counts.high));
                m.insert("minor".into(), json!(s.counts.medium + s.counts.low));
                m.insert("severity_counts".into(), json!(s.counts));
                m.insert("completed_at".into(), json!(s.completed_at.timestamp()));
                put(&mut m, "scanner", s.scanner.as_ref());
                m.insert("vulnerabilities".into(), json!(s.vulnerabilities));
                m.insert(
                    "vulnerabilities_truncated".into(),
                    json!(s.vulnerabilities_truncated),
                );
                put(&mut m, "error", s.error.as_ref());
            }
            if let Some(q) = &e.quota {
                m.insert("details".into(), json!(q.details));
                put(&mut m, "limit", q.limit);
                put(&mut m, "usage", q.usage);
                put(&mut m, "adding", q.adding);
            }
            Value::Object(m)
        })
        .collect();
    json!({"event_type": e.kind.legacy_type(), "events": events})
}
