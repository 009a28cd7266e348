//! Durations written as `30s`, `2m`, `1h 30m` or a bare number of seconds, at most
//! [`MAX`].

use super::*;

/// The longest duration a setting takes: 100 years (humantime's years). Longer ones would
/// overflow the clock they are added to (a deadline, a lease), and mean "never" anyway.
pub const MAX: Duration = Duration::from_secs(3_155_760_000);

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
    let d = match Raw::deserialize(d)? {
        Raw::Secs(n) => Duration::from_secs(n),
        Raw::Float(f) if f >= 0.0 => Duration::try_from_secs_f64(f).map_err(|_| {
            serde::de::Error::custom(format!("{f} seconds is longer than 100 years"))
        })?,
        Raw::Float(f) => return Err(serde::de::Error::custom(format!("{f} is not a duration"))),
        Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "{t:?} is not a duration ({e}); write e.g. 30s, 2m or a number of seconds"
            ))
        })?,
    };
    if d > MAX {
        return Err(serde::de::Error::custom(format!(
            "{} is longer than 100 years",
            humantime::format_duration(d)
        )));
    }
    Ok(d)
}
