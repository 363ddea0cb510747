//! `palisade policy suggest ID [--apply [--keep-audit]]`: the policy a sandbox's recorded
//! traffic suggests, each entry with its evidence; `--apply` puts it in force live.

use http::Method;
use serde_json::{Value, json};

use crate::client::Api;

pub(crate) async fn run(id: &str, apply: bool, keep_audit: bool, json: bool) -> anyhow::Result<()> {
    let api = Api::from_env()?;
    let path = format!("/v1/sandbox/{id}/network-policy/suggestion");
    let answer = if apply {
        api.call(
            Method::POST,
            &format!("{path}/apply"),
            Some(&json!({ "keep_audit": keep_audit })),
        )
        .await?
    } else {
        api.call(Method::GET, &path, None).await?
    };
    if json {
        println!("{answer}");
        return Ok(());
    }
    let suggestion = if apply {
        answer.get("suggestion").cloned().unwrap_or(Value::Null)
    } else {
        answer.clone()
    };
    print!("{}", render(&suggestion));
    if apply {
        let version = answer
            .pointer("/policy/version")
            .map_or_else(|| "-".to_owned(), Value::to_string);
        let audit = answer
            .pointer("/policy/network_policy/audit")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        println!(
            "\napplied: policy version {version} is enforced now; audit mode {}",
            if audit { "still on" } else { "off" }
        );
    } else {
        println!("\napply it live with: palisade policy suggest {id} --apply");
    }
    Ok(())
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// The time of day (UTC) of Unix milliseconds: evidence spans a session, rarely days.
fn ms_to_time(v: &Value) -> String {
    v.as_i64().map_or_else(
        || "-".to_owned(),
        |ms| {
            let s = ms.div_euclid(1000).rem_euclid(86_400);
            format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
        },
    )
}

fn evidence_cells(e: &Value) -> Vec<String> {
    let ports = e
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "-".to_owned());
    vec![
        text(e, "count"),
        ms_to_time(e.get("first_seen_ms").unwrap_or(&Value::Null)),
        ms_to_time(e.get("last_seen_ms").unwrap_or(&Value::Null)),
        ports,
        text(e, "bytes_sent"),
        text(e, "bytes_received"),
    ]
}

/// The suggestion as a person reads it: one table of entries with evidence, then what was
/// left out and why.
fn render(s: &Value) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let none = Vec::new();
    for d in s.get("domains").and_then(Value::as_array).unwrap_or(&none) {
        let names = d.get("names").and_then(Value::as_array).unwrap_or(&none);
        let mut row = vec![text(d, "domain"), "domain".to_owned()];
        row.extend(evidence_cells(d.get("evidence").unwrap_or(&Value::Null)));
        row.push(if names.len() > 1 {
            names
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            String::new()
        });
        rows.push(row);
    }
    for c in s.get("cidrs").and_then(Value::as_array).unwrap_or(&none) {
        let mut row = vec![text(c, "cidr"), format!("cidr ({})", text(c, "source"))];
        row.extend(evidence_cells(c.get("evidence").unwrap_or(&Value::Null)));
        row.push(String::new());
        rows.push(row);
    }
    let head = [
        "ENTRY", "KIND", "EVENTS", "FIRST", "LAST", "PORTS", "SENT", "RECEIVED", "COVERS",
    ];
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = format!(
        "suggested policy for {} (from {} events; mode custom):\n",
        text(s, "sandbox_id"),
        text(s, "events")
    );
    if rows.is_empty() {
        out.push_str("  no traffic recorded: the suggestion allows nothing\n");
    } else {
        out.push_str(&line(&head.map(str::to_owned)));
        for r in &rows {
            out.push_str(&line(r));
        }
    }
    if let Some(t) = s
        .pointer("/network_policy/transforms")
        .and_then(Value::as_array)
    {
        let domains: Vec<String> = t.iter().map(|x| text(x, "domain")).collect();
        out.push_str(&format!("kept transforms: {}\n", domains.join(", ")));
    }
    let unused = s.get("unused").and_then(Value::as_array).unwrap_or(&none);
    if !unused.is_empty() {
        let u: Vec<&str> = unused.iter().filter_map(Value::as_str).collect();
        out.push_str(&format!(
            "dropped (no traffic recorded): {}\n",
            u.join(", ")
        ));
    }
    let not = s
        .get("not_suggested")
        .and_then(Value::as_array)
        .unwrap_or(&none);
    if !not.is_empty() {
        out.push_str("not suggested (no list entry would allow these):\n");
        for n in not {
            out.push_str(&format!(
                "  {}  {}  ({} events)\n",
                text(n, "what"),
                text(n, "reason"),
                n.pointer("/evidence/count")
                    .map_or_else(|| "-".to_owned(), Value::to_string)
            ));
        }
    }
    for p in s.get("problems").and_then(Value::as_array).unwrap_or(&none) {
        out.push_str(&format!(
            "problem: {}: {}\n",
            text(p, "field"),
            text(p, "error")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use serde_json::json;

    #[test]
    fn renders_entries_with_evidence_and_what_was_left_out() {
        let s = json!({
            "sandbox_id": "sb1", "events": 12,
            "network_policy": {"mode": "custom", "transforms": [{"domain": "api.example.test"}]},
            "domains": [
                {"domain": "*.example.com", "names": ["a.example.com", "b.example.com", "c.example.com"],
                 "evidence": {"count": 6, "first_seen_ms": 0, "last_seen_ms": 61000, "ports": [443],
                              "bytes_sent": 100, "bytes_received": 2000, "verdicts": {"would-deny": 6}}},
                {"domain": "beta.test", "names": ["beta.test"],
                 "evidence": {"count": 2, "first_seen_ms": 0, "last_seen_ms": 0, "ports": [],
                              "bytes_sent": 0, "bytes_received": 0, "verdicts": {}}}
            ],
            "cidrs": [{"cidr": "198.51.100.30/32", "source": "seen",
                       "evidence": {"count": 1, "first_seen_ms": 0, "last_seen_ms": 0, "ports": [7],
                                    "bytes_sent": 10, "bytes_received": 10, "verdicts": {}}}],
            "unused": ["old.example.com"],
            "not_suggested": [{"what": "10.99.0.10", "reason": "private address", "evidence": {"count": 3}}],
            "problems": []
        });
        let out = super::render(&s);
        assert!(out.contains("from 12 events"), "{out}");
        let wild = out
            .lines()
            .find(|l| l.starts_with("*.example.com"))
            .unwrap();
        assert!(
            wild.contains("domain") && wild.contains("443") && wild.contains("00:01:01"),
            "{out}"
        );
        assert!(
            wild.contains("a.example.com, b.example.com, c.example.com"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("198.51.100.30/32") && l.contains("cidr (seen)")),
            "{out}"
        );
        assert!(out.contains("kept transforms: api.example.test"), "{out}");
        assert!(
            out.contains("dropped (no traffic recorded): old.example.com"),
            "{out}"
        );
        assert!(
            out.contains("10.99.0.10  private address  (3 events)"),
            "{out}"
        );
    }
}
