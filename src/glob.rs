//! Glob patterns: checked before they are stored, then matched.
//!
//! Patterns are matched by the `fast-glob` crate ([`matches`](fn@matches): webhook policy filters,
//! `events.ignore_pulls`). It never reports a malformed pattern: `[`, `{` or `[z-a]` simply
//! never match. [`check`] refuses them up front, following that crate's grammar exactly, and
//! then asks the crate's own `validate` (which also caps the brace groups of a pattern at 10):
//!
//! - leading `!`s negate the pattern;
//! - `\x` is the character `x` (a `\` at the end is an error);
//! - `[…]` / `[!…]` / `[^…]`: a class of ASCII characters and ranges `a-z` (a `]` right after
//!   the opening bracket, or escaped, is literal; ranges must not be reversed; the class must
//!   be closed);
//! - `{a,b,…}`: alternatives, nested at most [`MAX_BRACE_DEPTH`] deep, each `{` closed (a `}`
//!   outside braces is a literal character, as for the matcher), expanding to at most
//!   [`MAX_ALTERNATIVES`] brace-free patterns;
//! - `*`, `**`, `?`: wildcards;
//! - at most [`MAX_PATTERN_BYTES`] bytes in all.
//!
//! The last two limits are wharf's: they bound the time of a match, which runs for every event
//! (policy filters, set by project admins) or every pull (`events.ignore_pulls`).

/// The deepest brace nesting the matcher supports.
pub const MAX_BRACE_DEPTH: usize = 10;

/// The most brace-free patterns a pattern's braces may expand to (`{a,b}{c,d,e}`: 6). The
/// matcher's time grows with it: fast-glob tries the alternatives' combinations one by one, and
/// a 147-byte pattern of 6 groups took 0.23 s per match (found by the fuzz smoke).
pub const MAX_ALTERNATIVES: usize = 64;

/// The longest pattern, in bytes. With [`MAX_ALTERNATIVES`], this bounds a match: at most about
/// `MAX_ALTERNATIVES × MAX_PATTERN_BYTES × subject length` steps (~1 ms against a 255-byte
/// name, measured).
pub const MAX_PATTERN_BYTES: usize = 256;

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
    #[error("the braces expand to more than {MAX_ALTERNATIVES} alternatives")]
    TooManyAlternatives,
    #[error("a pattern may be at most {MAX_PATTERN_BYTES} bytes long (this one has {0})")]
    TooLong(usize),
    /// Refused by the matcher's own validation (e.g. more than 10 brace groups).
    #[error(transparent)]
    Matcher(#[from] fast_glob::Error),
}

/// Does `subject` match `pattern`? The pattern should have passed [`check`]; a malformed one
/// matches nothing.
pub fn matches(pattern: &str, subject: &str) -> bool {
    fast_glob::glob_match(pattern, subject)
}

/// Is `pattern` a well-formed glob (see the module docs)?
pub fn check(pattern: &str) -> Result<(), GlobError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(GlobError::TooLong(pattern.len()));
    }
    let b = pattern.as_bytes();
    let mut i = 0;
    while b.get(i) == Some(&b'!') {
        i += 1;
    }
    // the open braces, innermost last; `top`: the sequence outside every brace
    let mut braces: Vec<Group> = Vec::new();
    let mut top = Group {
        open: 0,
        done: 0,
        current: 1,
    };
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
                braces.push(Group {
                    open: i,
                    done: 0,
                    current: 1,
                });
                if braces.len() > MAX_BRACE_DEPTH {
                    return Err(GlobError::TooDeep);
                }
                i += 1;
            }
            b',' => {
                if let Some(g) = braces.last_mut() {
                    g.done = g.done.saturating_add(g.current);
                    g.current = 1;
                }
                i += 1;
            }
            b'}' => {
                if let Some(g) = braces.pop() {
                    let outer = braces.last_mut().unwrap_or(&mut top);
                    outer.current = outer.current.saturating_mul(g.alternatives());
                    if outer.current > MAX_ALTERNATIVES {
                        return Err(GlobError::TooManyAlternatives);
                    }
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    if let Some(g) = braces.first() {
        return Err(GlobError::UnclosedBrace(g.open));
    }
    fast_glob::validate(pattern)?;
    Ok(())
}

/// A brace group being read: how many brace-free patterns its alternatives expand to.
struct Group {
    open: usize,
    /// The alternatives before the current one.
    done: usize,
    /// The current alternative (the product of the groups in it).
    current: usize,
}

impl Group {
    fn alternatives(&self) -> usize {
        self.done.saturating_add(self.current)
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

/// A pattern of a list that is refused, named by the list's key and the pattern's index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}[{index}]: {problem}")]
pub struct PatternError {
    pub key: String,
    pub index: usize,
    #[source]
    pub problem: PatternProblem,
}

impl PatternError {
    /// `key[index]`: the field a message names.
    pub fn field(&self) -> String {
        format!("{}[{}]", self.key, self.index)
    }
}

/// Why a pattern of a list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternProblem {
    #[error("empty pattern")]
    Empty,
    #[error("{pattern:?} is not a valid pattern: {source}")]
    Invalid {
        pattern: String,
        #[source]
        source: GlobError,
    },
}

/// Check a list of patterns; the error names `key[index]`.
pub fn check_all(key: &str, patterns: &[String]) -> Result<(), PatternError> {
    for (index, p) in patterns.iter().enumerate() {
        let problem = if p.trim().is_empty() {
            PatternProblem::Empty
        } else {
            match check(p) {
                Ok(()) => continue,
                Err(source) => PatternProblem::Invalid {
                    pattern: p.clone(),
                    source,
                },
            }
        };
        return Err(PatternError {
            key: key.to_string(),
            index,
            problem,
        });
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
            check_all("filters.tags", &["v*".into(), "[z-a]".into()])
                .unwrap_err()
                .to_string(),
            "filters.tags[1]: \"[z-a]\" is not a valid pattern: the range 'z'-'a' is reversed"
        );
        let eleven = "{a}".repeat(11);
        assert!(
            matches!(check(&eleven), Err(GlobError::Matcher(_))),
            "{eleven}"
        );
        assert_eq!(
            check_all("filters.tags", &[eleven])
                .unwrap_err()
                .to_string(),
            format!(
                "filters.tags[0]: {:?} is not a valid pattern: brace expansion at byte 30 \
                 exceeds the supported limit of 10 groups",
                "{a}".repeat(11)
            )
        );
        assert_eq!(check(&"{a}".repeat(10)), Ok(()));
        assert_eq!(
            check_all("filters.tags", &[" ".into()]).unwrap_err(),
            PatternError {
                key: "filters.tags".into(),
                index: 0,
                problem: PatternProblem::Empty
            }
        );
        let e = check_all("users", &["[".into()]).unwrap_err();
        assert_eq!(e.field(), "users[0]");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn refused_patterns_were_patterns_that_never_match() {
        // what the matcher does with them: nothing ever matches
        for p in ["[", "{", "[z-a]"] {
            for s in ["", "[", "{", "a", "z", "za", "az"] {
                assert!(!super::matches(p, s), "{p} matched {s}");
            }
        }
    }

    /// Regression: glob-match 0.2.1, the matcher before fast-glob, never returned for this
    /// pattern (which `check` accepts) and this subject; the fuzz smoke found it.
    #[test]
    fn a_brace_holding_a_globstar_segment_is_matched_in_bounded_time() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send((
                super::matches("{/**/,*}", "//"),
                super::matches("{/**/,*}", "a"),
            ));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            got,
            Ok((true, true)),
            "the matcher did not return within 10 s"
        );
        assert_eq!(check("{/**/,*}"), Ok(()));
    }

    #[test]
    fn patterns_that_would_make_matching_slow_are_refused() {
        // 2^6 = 64 alternatives pass, 2^7 do not; nested groups count inside their alternative
        assert_eq!(check(&"{a,b}".repeat(6)), Ok(()));
        assert_eq!(
            check(&"{a,b}".repeat(7)),
            Err(GlobError::TooManyAlternatives)
        );
        assert_eq!(check("{a,b{c,d},e}"), Ok(()));
        assert_eq!(check(&format!("{{{}}}", "x,".repeat(63))), Ok(()));
        assert_eq!(
            check(&format!("{{{}}}", "x,".repeat(64))),
            Err(GlobError::TooManyAlternatives)
        );
        // (1 + 2^4) × 2 = 34; (1 + 2^5) × 2 = 66
        assert_eq!(
            check(&format!("{{a,{}}}{{b,c}}", "{x,y}".repeat(4))),
            Ok(())
        );
        assert_eq!(
            check(&format!("{{a,{}}}{{b,c}}", "{x,y}".repeat(5))),
            Err(GlobError::TooManyAlternatives)
        );
        // commas outside braces, escaped or in a class are characters
        assert_eq!(check(&format!("{},\\{{[,]", ",".repeat(100))), Ok(()));
        assert_eq!(check(&"a".repeat(256)), Ok(()));
        assert_eq!(check(&"a".repeat(257)), Err(GlobError::TooLong(257)));
        // found by the fuzz smoke: 0.23 s per match (release build) with fast-glob
        let slow = "*{5,,,,,,,\0,[![.?],\0\0\x1c}{,[![\0?],\0\0\x1c}{f,[![.?]\0\x1c,,,,,,,,,,,,%,,,,,,,,,,,,,,,,\0,[![.?],\0\0\x1c}";
        assert_eq!(check(slow), Err(GlobError::TooManyAlternatives));
    }

    #[test]
    fn the_matcher_follows_the_documented_grammar() {
        for (p, s, want) in [
            ("team/*", "team/app", true),
            ("team/*", "team/app/x", false),
            ("prj/**", "prj/a/b", true),
            ("v?.*", "v1.2", true),
            ("[!a-z]*", "1x", true),
            ("[^a-z]*", "ax", false),
            ("{a,{b,c}}", "c", true),
            ("!{x,y}*", "xa", false),
            ("!{x,y}*", "za", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("}", "}", true),
            ("Trivy/*", "Trivy/0.50", true),
        ] {
            assert_eq!(super::matches(p, s), want, "{p} ~ {s}");
        }
    }
}
