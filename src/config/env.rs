//! `WHARF_…` environment overrides of configuration keys: which variables are overrides (not
//! the ones Kubernetes injects for a Service), their key paths, and how a value is applied.

use super::{ConfigError, ENV_PREFIX, LITERAL_KEYS};

/// Is `var=value` one of the variables Kubernetes injects into every pod of a namespace for a
/// Service named `wharf` or `wharf-<x>` (docker-links style)? For a Service `<NAME>` with a port
/// 8080/TCP named `http`: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`,
/// `<NAME>_SERVICE_PORT_HTTP`, `<NAME>_PORT=tcp://…`, `<NAME>_PORT_8080_TCP=tcp://…`,
/// `<NAME>_PORT_8080_TCP_PROTO`, `…_PORT`, `…_ADDR` (the name upper-cased, `-` as `_`).
/// A config override always has `__` between levels and no such shape: no key ends in
/// `_service_host`, `_service_port…` or `_port` (a unit test keeps it so).
pub fn is_kubernetes_service_link(var: &str, value: &str) -> bool {
    let Some(rest) = var.strip_prefix("WHARF") else {
        return false;
    };
    if !rest.starts_with('_')
        || var.contains("__")
        || !rest
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    {
        return false;
    }
    let is_url = ["tcp://", "udp://", "sctp://"]
        .iter()
        .any(|p| value.starts_with(p));
    // `<NAME>` is WHARF or WHARF_<x>: the suffix may start at any `_`
    rest.match_indices('_').any(|(i, _)| {
        let suffix = &rest[i..];
        if suffix == "_SERVICE_HOST" || suffix == "_SERVICE_PORT" {
            return true;
        }
        if let Some(port_name) = suffix.strip_prefix("_SERVICE_PORT_") {
            return !port_name.is_empty();
        }
        if suffix == "_PORT" {
            return is_url;
        }
        let Some(tail) = suffix.strip_prefix("_PORT_") else {
            return false;
        };
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        match tail[digits..]
            .strip_prefix("_TCP")
            .or_else(|| tail[digits..].strip_prefix("_UDP"))
            .or_else(|| tail[digits..].strip_prefix("_SCTP"))
        {
            Some("") => is_url,
            Some("_PROTO") | Some("_PORT") | Some("_ADDR") => true,
            _ => false,
        }
    })
}

/// The key path of an override: `WHARF_A__B_C` → `["a", "b_c"]`.
pub(super) fn override_path(var: &str) -> Vec<String> {
    var.get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

/// Apply one `WHARF_A__B_C=value` override: the key path is `a.b_c`. The values of
/// [`LITERAL_KEYS`] are taken as they are, others are read as YAML scalars.
pub(super) fn apply_override(
    root: &mut serde_yaml_ng::Value,
    var: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    use serde_yaml_ng::Value;
    let env_err = |reason: String| ConfigError::Env {
        var: var.to_string(),
        reason,
    };
    let path = override_path(var);
    if path.iter().any(|p| p.is_empty()) {
        return Err(env_err("empty key segment".into()));
    }
    let literal = LITERAL_KEYS.contains(&path.join(".").as_str());
    let parsed: Value = if raw.is_empty() || literal {
        Value::String(raw.to_string())
    } else {
        serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
    };
    let mut node = root;
    for (i, seg) in path.iter().enumerate() {
        let map = match node {
            Value::Mapping(m) => m,
            Value::Null => {
                *node = Value::Mapping(Default::default());
                match node {
                    Value::Mapping(m) => m,
                    _ => unreachable!("just assigned a mapping"),
                }
            }
            _ => {
                return Err(env_err(format!("{} is not a section", path[..i].join("."))));
            }
        };
        let key = Value::String(seg.clone());
        if i + 1 == path.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}
