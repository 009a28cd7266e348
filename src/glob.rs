//! Checking glob patterns before they are stored.
//!
//! Patterns are matched by the `glob-match` crate (webhook policy filters,
//! `events.ignore_pulls`). It never reports a malformed pattern: `[`, `{` or `[z-a]` simply
//! never match. [`check`] refuses them up front, following that crate's grammar exactly:
//!
//! - leading `!`s negate the pattern;
//! - `\x` is the character `x` (a `\` at the end is an error);
//! - `[…]` / `[!…]` / `[^…]`: a class of ASCII characters and ranges `a-z` (a `]` right after
//!   the opening bracket, or escaped, is literal; ranges must not be reversed; the class must
//!   be closed);
//! - `{a,b,…}`: alternatives, nested at most [`MAX_BRACE_DEPTH`] deep, each `{` closed (a `}`
//!   outside braces is a literal character, as for the matcher);
//! - `*`, `**`, `?`: wildcards.

/// The deepest brace nesting the matcher supports.
pub const MAX_BRACE_DEPTH: usize = 10;

/// What is wrong with a pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("a `\\` at the end escapes nothing")]
    TrailingEscape,
    #[error("`[` at offset {0} is never closed by `]`")]
    UnclosedClass(usize),
    #[error("the character class at offset {0} is empty")]
    EmptyClass(usize),
    #[error("the range {0:?}-{1:?} is reversed")]
    ReversedRange(char, char),
    #[error("a character class may hold ASCII characters only (offset {0})")]
    NonAsciiClass(usize),
    #[error("`{{` at offset {0} is never closed by `}}`")]
    UnclosedBrace(usize),
    #[error("braces nest deeper than {MAX_BRACE_DEPTH}")]
    TooDeep,
}

/// Is `pattern` a well-formed glob (see the module docs)?
pub fn check(pattern: &str) -> Result<(), GlobError> {
    let b = pattern.as_bytes();
    let mut i = 0;
    while b.get(i) == Some(&b'!') {
        i += 1;
    }
    let mut braces: Vec<usize> = Vec::new();
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if i + 1 >= b.len() {
                    return Err(GlobError::TrailingEscape);
                }
                i += 2;
            }
            b'[' => i = class(b, i)?,
            b'{' => {
                braces.push(i);
                if braces.len() > MAX_BRACE_DEPTH {
                    return Err(GlobError::TooDeep);
                }
                i += 1;
            }
            b'}' => {
                braces.pop();
                i += 1;
            }
            _ => i += 1,
        }
    }
    match braces.first() {
        Some(&open) => Err(GlobError::UnclosedBrace(open)),
        None => Ok(()),
    }
}

/// One class element: a byte, or an escaped byte. Returns it and the index after it.
fn element(b: &[u8], i: usize, open: usize) -> Result<(u8, usize), GlobError> {
    let (c, next) = match b.get(i) {
        Some(b'\\') => (*b.get(i + 1).ok_or(GlobError::TrailingEscape)?, i + 2),
        Some(c) => (*c, i + 1),
        None => return Err(GlobError::UnclosedClass(open)),
    };
    if !c.is_ascii() {
        return Err(GlobError::NonAsciiClass(i));
    }
    Ok((c, next))
}

/// Check the class opening at `open`; returns the index after its `]`.
fn class(b: &[u8], open: usize) -> Result<usize, GlobError> {
    let mut i = open + 1;
    if matches!(b.get(i), Some(b'!') | Some(b'^')) {
        i += 1;
    }
    let mut first = true;
    loop {
        match b.get(i) {
            None => return Err(GlobError::UnclosedClass(open)),
            Some(b']') if !first => return Ok(i + 1),
            Some(_) => {}
        }
        let (low, next) = element(b, i, open)?;
        i = next;
        if b.get(i) == Some(&b'-') && b.get(i + 1).is_some_and(|&c| c != b']') {
            let (high, next) = element(b, i + 1, open)?;
            if low > high {
                return Err(GlobError::ReversedRange(char::from(low), char::from(high)));
            }
            i = next;
        }
        first = false;
        if b.get(i).is_none() {
            return Err(GlobError::UnclosedClass(open));
        }
    }
}

/// Check a list of patterns; the error names `key[index]`.
pub fn check_all(key: &str, patterns: &[String]) -> Result<(), String> {
    for (i, p) in patterns.iter().enumerate() {
        if p.trim().is_empty() {
            return Err(format!("{key}[{i}]: empty pattern"));
        }
        check(p).map_err(|e| format!("{key}[{i}]: {p:?} is not a valid pattern: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_patterns_pass() {
        for p in [
            "*",
            "**",
            "team/*",
            "prj/**",
            "v*",
            "v?.*",
            "[abc]",
            "[a-z0-9]*",
            "[!a-z]",
            "[^a-z]",
            "[]]",
            "[]a]",
            "[\\]]",
            "[a-]",
            "{a,b}",
            "{a,{b,c}}",
            "!{x,y}*",
            "a\\*b",
            "}",
            "release-{v1,v2}.[0-9]",
            "Trivy/*",
            "ä*",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for (p, e) in [
            ("[", GlobError::UnclosedClass(0)),
            ("a[bc", GlobError::UnclosedClass(1)),
            ("[]", GlobError::UnclosedClass(0)),
            ("[!]", GlobError::UnclosedClass(0)),
            ("[z-a]", GlobError::ReversedRange('z', 'a')),
            ("[9-0]x", GlobError::ReversedRange('9', '0')),
            ("[ä]", GlobError::NonAsciiClass(1)),
            ("{", GlobError::UnclosedBrace(0)),
            ("a{b,c", GlobError::UnclosedBrace(1)),
            ("{a,{b}", GlobError::UnclosedBrace(0)),
            ("x\\", GlobError::TrailingEscape),
            ("[a\\", GlobError::TrailingEscape),
            ("{{{{{{{{{{{a}}}}}}}}}}}", GlobError::TooDeep),
        ] {
            assert_eq!(check(p), Err(e.clone()), "{p}");
        }
        assert_eq!(
            check_all("filters.tags", &["v*".into(), "[z-a]".into()]).unwrap_err(),
            "filters.tags[1]: \"[z-a]\" is not a valid pattern: the range 'z'-'a' is reversed"
        );
        assert_eq!(
            check_all("filters.tags", &[" ".into()]).unwrap_err(),
            "filters.tags[0]: empty pattern"
        );
    }

    #[test]
    fn refused_patterns_were_patterns_that_never_match() {
        // what the matcher does with them: nothing ever matches
        for p in ["[", "{", "[z-a]"] {
            for s in ["", "[", "{", "a", "z", "za", "az"] {
                assert!(!glob_match::glob_match(p, s), "{p} matched {s}");
            }
        }
    }
}
