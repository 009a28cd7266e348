//! Durations written as `30s`, `2m`, `1h 30m` or a bare number of seconds.

use super::*;

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(n) => Ok(Duration::from_secs(n)),
        Raw::Float(f) if f.is_finite() && f >= 0.0 => Ok(Duration::from_secs_f64(f)),
        Raw::Float(f) => Err(serde::de::Error::custom(format!("{f} is not a duration"))),
        Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{t:?} is not a duration ({e}); write e.g. 30s, 2m or a number of seconds"
            ))
        }),
    }
}
