//! L7 rules of a transform domain: which intercepted requests may go upstream, by method and
//! path (`GET /v1/models`, `POST /v1/chat/*`). Only intercepted domains have them: the proxy can
//! see a request only where it terminates TLS (and on plain HTTP to the same domain).
//!
//! Rules are tried in order and the first that matches decides. When none matches, the request
//! is denied if the list has any `allow` rule (an allowlist), and allowed otherwise (a list of
//! `deny` rules only is a blocklist).
//!
//! Paths are compared segment by segment, case-sensitively, after the same normalisation on
//! both sides: percent-encoded unreserved characters are decoded (`%61` is `a`) and other
//! escapes upper-cased. A request path the firewall cannot compare unambiguously — a dot segment
//! (`.`/`..`), an empty segment (`//`), an encoded `/` or `\`, a backslash — is refused rather
//! than guessed at, since the upstream might resolve it to a path a rule denies. A pattern
//! segment `*` matches exactly one (non-empty) segment; a last segment `**` matches any number of
//! further segments (none included); a trailing `/` is a last, empty segment, so `/simple/`
//! matches `/simple/` and not `/simple`. The query string is not part of the match.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// One rule as sent: `{"action": "allow", "method": "GET", "path": "/v1/models"}`; `method`
/// omitted (or `*`) matches every method.
#[skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpRuleSpec {
    /// `allow` or `deny`.
    pub action: String,
    /// An HTTP method token, or `*` / absent for any.
    pub method: Option<String>,
    /// An absolute path pattern.
    pub path: String,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// A final `**`: any number of segments.
    Rest,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    action: HttpAction,
    method: Option<String>,
    path: Vec<Segment>,
    /// The path pattern as given (normalised), for messages.
    shown: String,
}

impl fmt::Display for HttpRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match self.action {
            HttpAction::Allow => "allow",
            HttpAction::Deny => "deny",
        };
        write!(
            f,
            "{action} {} {}",
            self.method.as_deref().unwrap_or("*"),
            self.shown
        )
    }
}

/// The outcome of the rules for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpDecision {
    /// Send it (`rule`: the index of the rule that allowed it, if one did).
    Allow { rule: Option<usize> },
    /// Refuse it: `rule` is the index of the deny rule that matched, or `None` when no allow rule
    /// did; `reason` says which in words.
    Deny { rule: Option<usize>, reason: String },
    /// The path cannot be compared unambiguously (see the module doc).
    BadPath(&'static str),
}

impl HttpRule {
    /// Checks one rule; `Err` is (field suffix, message).
    pub(crate) fn parse(spec: &HttpRuleSpec) -> Result<HttpRule, Vec<(&'static str, String)>> {
        let mut errs = Vec::new();
        let action = match spec.action.as_str() {
            "allow" => Some(HttpAction::Allow),
            "deny" => Some(HttpAction::Deny),
            _ => {
                errs.push(("action", "must be \"allow\" or \"deny\"".to_owned()));
                None
            }
        };
        let method = match spec.method.as_deref() {
            None | Some("*") => None,
            Some(m) if !m.is_empty() && m.len() <= 32 && m.bytes().all(is_tchar) => {
                Some(m.to_owned())
            }
            Some(_) => {
                errs.push((
                    "method",
                    "must be an HTTP method token (GET, POST, …) or \"*\"".to_owned(),
                ));
                None
            }
        };
        let path = match parse_pattern(&spec.path) {
            Ok(p) => Some(p),
            Err(e) => {
                errs.push(("path", e.to_owned()));
                None
            }
        };
        match (action, path) {
            (Some(action), Some((path, shown))) if errs.is_empty() => Ok(HttpRule {
                action,
                method,
                path,
                shown,
            }),
            _ => Err(errs),
        }
    }

    /// The rule back as wire JSON.
    pub(crate) fn to_spec(&self) -> HttpRuleSpec {
        HttpRuleSpec {
            action: match self.action {
                HttpAction::Allow => "allow".to_owned(),
                HttpAction::Deny => "deny".to_owned(),
            },
            method: self.method.clone(),
            path: self.shown.clone(),
        }
    }

    /// What the rule does when it matches.
    pub fn action(&self) -> HttpAction {
        self.action
    }

    fn matches(&self, method: &str, segments: &[String]) -> bool {
        if self.method.as_deref().is_some_and(|m| m != method) {
            return false;
        }
        let mut i = 0;
        for seg in &self.path {
            match seg {
                Segment::Rest => return true,
                Segment::One => {
                    if segments.get(i).is_none_or(String::is_empty) {
                        return false;
                    }
                }
                Segment::Literal(l) => {
                    if segments.get(i) != Some(l) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == segments.len()
    }
}

/// Decides a request under `rules` (see the module doc). `path` is the request target's path
/// (no query), as sent.
pub(crate) fn decide(rules: &[HttpRule], method: &str, path: &str) -> HttpDecision {
    if rules.is_empty() {
        return HttpDecision::Allow { rule: None };
    }
    let segments = match normalise(path) {
        Ok(s) => s,
        Err(why) => return HttpDecision::BadPath(why),
    };
    for (i, r) in rules.iter().enumerate() {
        if r.matches(method, &segments) {
            return match r.action {
                HttpAction::Allow => HttpDecision::Allow { rule: Some(i) },
                HttpAction::Deny => HttpDecision::Deny {
                    rule: Some(i),
                    reason: format!("{method} {path} is denied by http_rules[{i}] ({r})"),
                },
            };
        }
    }
    if rules.iter().any(|r| r.action == HttpAction::Allow) {
        HttpDecision::Deny {
            rule: None,
            reason: format!("{method} {path} matches no allow rule in http_rules"),
        }
    } else {
        HttpDecision::Allow { rule: None }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Splits an absolute path into normalised segments, or says why it is ambiguous.
fn normalise(path: &str) -> Result<Vec<String>, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the path is not absolute");
    };
    if path == "/" {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let parts: Vec<&str> = rest.split('/').collect();
    for (i, raw) in parts.iter().enumerate() {
        // A trailing slash is a last, empty segment (`/simple/`); `//` inside is ambiguous.
        if raw.is_empty() && i + 1 < parts.len() {
            return Err("the path has an empty segment (//)");
        }
        let seg = normalise_segment(raw)?;
        if seg == "." || seg == ".." {
            return Err("the path has a dot segment (. or ..)");
        }
        out.push(seg);
    }
    Ok(out)
}

fn normalise_segment(raw: &str) -> Result<String, &'static str> {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => return Err("the path has a backslash"),
            b'%' => {
                let hex = |c: u8| char::from(c).to_digit(16);
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err("the path has a broken percent-escape");
                };
                let byte = (h * 16 + l) as u8;
                if byte == b'/' || byte == b'\\' {
                    return Err("the path has an encoded / or \\");
                }
                if unreserved(byte) {
                    out.push(char::from(byte));
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
                i += 3;
            }
            c if c.is_ascii() && !c.is_ascii_control() && c != b' ' => {
                out.push(char::from(c));
                i += 1;
            }
            _ => return Err("the path has a byte that must be percent-encoded"),
        }
    }
    Ok(out)
}

/// A pattern: an absolute path whose segments are literals, `*`, or a final `**`.
fn parse_pattern(p: &str) -> Result<(Vec<Segment>, String), &'static str> {
    if !p.starts_with('/') {
        return Err("must be an absolute path pattern starting with /");
    }
    if p.len() > 1024 {
        return Err("is longer than 1024 bytes");
    }
    if p == "/" {
        return Ok((Vec::new(), "/".to_owned()));
    }
    let mut segs = Vec::new();
    let parts: Vec<&str> = p[1..].split('/').collect();
    for (i, raw) in parts.iter().enumerate() {
        let seg = match *raw {
            "**" if i + 1 == parts.len() => Segment::Rest,
            "**" => return Err("** may only be the last segment"),
            "*" => Segment::One,
            s if s.contains('*') => {
                return Err("* must be a whole segment (/v1/*/x), ** only the last one");
            }
            "" if i + 1 == parts.len() => Segment::Literal(String::new()),
            "" => return Err("has an empty segment (//)"),
            s => {
                let n = normalise_segment(s).map_err(
                    |_| "has a segment that is not a normalised path segment (percent-encode it)",
                )?;
                if n == "." || n == ".." {
                    return Err("has a dot segment (. or ..)");
                }
                Segment::Literal(n)
            }
        };
        segs.push(seg);
    }
    let shown = format!(
        "/{}",
        segs.iter()
            .map(|s| match s {
                Segment::Literal(l) => l.as_str(),
                Segment::One => "*",
                Segment::Rest => "**",
            })
            .collect::<Vec<_>>()
            .join("/")
    );
    Ok((segs, shown))
}

#[cfg(test)]
mod tests;
