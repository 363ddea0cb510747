//! One query in, one response (or nothing) out: the filtering decision.
//!
//! The order matters for threat 14: the source, the message, the name and the policy are all
//! checked before anything can reach the upstream resolver, and only an allowed name asked for
//! an A record ever does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use palisade_policy::{CanonicalName, CompiledPolicy, Mode, NameVerdict, Rule, canonicalize};

use super::answer::{CLASSIC_UDP_PAYLOAD, Reply, udp_limit};
use super::{DnsLimits, DnsView};
use crate::decision::RuleRef;
use crate::events::{EgressEvent, EventKind, EventVerdict};

/// No rule of the policy allows it (also the rule of queries refused for their form).
const DEFAULT: RuleRef = RuleRef::Policy(Rule::NoMatch);
use crate::resolve::UpstreamResolver;

/// How the query arrived; decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// Where a query came from and which server address it reached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) src: IpAddr,
    pub(crate) server: SocketAddr,
    pub(crate) transport: Transport,
}

/// What an event says about one query.
#[derive(Debug)]
struct Note {
    verdict: EventVerdict,
    name: Option<String>,
    rule: RuleRef,
    reason: String,
}

impl Note {
    /// Under audit, an answer the policy would have refused (NXDOMAIN) is a would-deny with the
    /// policy's reason; a denial for another reason (internal addresses only) stays a denial.
    fn audited(mut self, would: Option<String>) -> Self {
        if let Some(why) = would
            && self.verdict == EventVerdict::Allow
        {
            self.verdict = EventVerdict::WouldDeny;
            self.reason = format!("{why}; resolved: {}", self.reason);
        }
        self
    }

    fn deny(name: Option<String>, rule: RuleRef, reason: impl Into<String>) -> Self {
        Self {
            verdict: EventVerdict::Deny,
            name,
            rule,
            reason: reason.into(),
        }
    }

    fn allow(name: Option<String>, rule: RuleRef, reason: impl Into<String>) -> Self {
        Self {
            verdict: EventVerdict::Allow,
            name,
            rule,
            reason: reason.into(),
        }
    }
}

/// Answers queries for every sandbox, each through its own policy.
#[derive(Debug)]
pub(crate) struct Responder {
    pub(crate) view: Arc<dyn DnsView>,
    pub(crate) resolver: Arc<UpstreamResolver>,
    pub(crate) limits: DnsLimits,
}

impl Responder {
    /// The response to `packet`, or `None` when it must be dropped (no parseable header, or a
    /// response rather than a query: answering those would let two servers loop).
    pub(crate) async fn respond(&self, packet: &[u8], origin: Origin) -> Option<Vec<u8>> {
        let started = Instant::now();
        let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
        if header.metadata.message_type != MessageType::Query {
            return None;
        }
        let Some((sandbox, policy)) = self.view.policy_for(origin.src) else {
            tracing::debug!(src = %origin.src, "DNS query from an address that is not a sandbox");
            let (reply, query) = self.refused(&header, packet);
            let mut event = EgressEvent::new("", EventKind::Dns, EventVerdict::Deny, DEFAULT);
            event.dst = Some(origin.server);
            event.name = query.map(|q| display_name(q.name()));
            event.reason = format!("source {} is not a sandbox", origin.src);
            event.duration = started.elapsed();
            self.view.events().record(event);
            return reply.encode(usize::from(CLASSIC_UDP_PAYLOAD));
        };

        let (reply, limit, note) = match Message::from_vec(packet) {
            Ok(req) => {
                let limit = match origin.transport {
                    Transport::Udp => udp_limit(req.edns.as_ref(), self.limits.max_udp_payload),
                    Transport::Tcp => usize::from(u16::MAX),
                };
                let (reply, note) = self.decide(&req, &policy, origin.src, &sandbox).await;
                (reply, limit, note)
            }
            Err(e) => {
                let reply = Reply::new(
                    &header.metadata,
                    None,
                    None,
                    self.limits.max_udp_payload,
                    ResponseCode::FormErr,
                );
                let note = Note::deny(None, DEFAULT, format!("malformed query: {e}"));
                (reply, usize::from(CLASSIC_UDP_PAYLOAD), note)
            }
        };

        let mut event = EgressEvent::new(&*sandbox, EventKind::Dns, note.verdict, note.rule);
        event.dst = Some(origin.server);
        event.name = note.name;
        event.reason = note.reason;
        event.duration = started.elapsed();
        self.view.events().record(event);
        reply.encode(limit)
    }

    /// Records that `dropped` queries from `origin.src` went over its rate since the last
    /// report: one deny event (and one warning) for all of them, not one per query.
    pub(crate) fn report_over_rate(&self, origin: Origin, dropped: u64) {
        let sandbox = self
            .view
            .policy_for(origin.src)
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        let what = match origin.transport {
            Transport::Udp => "dropped",
            Transport::Tcp => "refused",
        };
        let reason = format!(
            "{dropped} quer{} over the limit of {}/s (burst {}) {what}",
            if dropped == 1 { "y" } else { "ies" },
            self.limits.queries_per_second_per_source,
            self.limits.query_burst_per_source
        );
        tracing::warn!(%sandbox, src = %origin.src, %reason, "DNS query rate limit");
        let rule = RuleRef::DnsRateLimit;
        let mut event = EgressEvent::new(sandbox, EventKind::Dns, EventVerdict::Deny, rule);
        event.dst = Some(origin.server);
        event.reason = reason;
        self.view.events().record(event);
    }

    /// REFUSED for a query over its source's rate (TCP), built from the header and question
    /// alone; `None` when the packet is not a query.
    pub(crate) fn refuse(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
        if header.metadata.message_type != MessageType::Query {
            return None;
        }
        self.refused(&header, packet)
            .0
            .encode(usize::from(u16::MAX))
    }

    /// REFUSED built from the header and, when the message parses with one question, that
    /// question (returned too, for the event).
    fn refused(&self, header: &Header, packet: &[u8]) -> (Reply, Option<Query>) {
        let query = Message::from_vec(packet)
            .ok()
            .and_then(|m| match m.queries.as_slice() {
                [q] => Some(q.clone()),
                _ => None,
            });
        let reply = Reply::new(
            &header.metadata,
            query.as_ref(),
            None,
            self.limits.max_udp_payload,
            ResponseCode::Refused,
        );
        (reply, query)
    }

    /// The decision for a well-formed message from a known sandbox.
    async fn decide(
        &self,
        req: &Message,
        policy: &CompiledPolicy,
        src: IpAddr,
        sandbox: &str,
    ) -> (Reply, Note) {
        let reply = |query: Option<&Query>, rcode| self.reply(req, query, rcode);
        if req.metadata.op_code != OpCode::Query {
            let note = Note::deny(
                None,
                DEFAULT,
                format!("opcode {:?} not served", req.metadata.op_code),
            );
            return (reply(None, ResponseCode::NotImp), note);
        }
        if let Some(version) = req.edns.as_ref().map(|e| e.version()).filter(|v| *v > 0) {
            // RFC 6891 §6.1.3: answer BADVERS with the highest version we speak (0).
            let note = Note::deny(None, DEFAULT, format!("EDNS version {version} not served"));
            return (reply(None, ResponseCode::BADVERS), note);
        }
        let [query] = req.queries.as_slice() else {
            let note = Note::deny(
                None,
                DEFAULT,
                format!("{} questions in one query", req.queries.len()),
            );
            return (reply(None, ResponseCode::FormErr), note);
        };
        let shown = Some(display_name(query.name()));
        if query.query_class() != DNSClass::IN {
            let note = Note::deny(
                shown,
                DEFAULT,
                format!("class {} not served", query.query_class()),
            );
            return (reply(Some(query), ResponseCode::Refused), note);
        }
        if !policy.allows_any_name() {
            // deny-all, or custom with no domain: nothing to resolve, so fail fast.
            let note = match policy.mode() {
                Mode::DenyAll => Note::deny(
                    shown,
                    RuleRef::Policy(Rule::DenyAll),
                    "the policy denies all traffic",
                ),
                _ => Note::deny(shown, DEFAULT, "the policy allows no names"),
            };
            return (reply(Some(query), ResponseCode::Refused), note);
        }
        let name = match wire_to_canonical(query.name()) {
            Ok(name) => name,
            Err(NameProblem::Root) => {
                let note = Note::deny(shown, DEFAULT, "query for the root");
                return (reply(Some(query), ResponseCode::Refused), note);
            }
            Err(NameProblem::Invalid(why)) => {
                let mut r = reply(Some(query), ResponseCode::NXDomain);
                r.negative_soa(self.limits.negative_ttl);
                return (
                    r,
                    Note::deny(shown, DEFAULT, format!("invalid name: {why}")),
                );
            }
        };
        let canon = Some(name.as_str().to_owned());
        let (rule, would) = match policy.decide_name(&name) {
            // `on_unknown: hold`: the query waits here, before anything is asked upstream.
            NameVerdict::Deny { .. } if policy.holds(&name) => {
                match self.held(sandbox, &name).await {
                    Some(o) if o.allowed => (RuleRef::Held(o.rule), None),
                    Some(o) => {
                        let mut r = reply(Some(query), ResponseCode::NXDomain);
                        r.negative_soa(self.limits.negative_ttl);
                        return (r, Note::deny(canon, RuleRef::Held(o.rule), o.reason));
                    }
                    None => {
                        let mut r = reply(Some(query), ResponseCode::NXDomain);
                        r.negative_soa(self.limits.negative_ttl);
                        let why = "held names cannot be approved here (no approval queue)";
                        return (r, Note::deny(canon, RuleRef::Policy(Rule::NoMatch), why));
                    }
                }
            }
            // Audit: resolve it as if allowed, and say what the policy would have answered.
            NameVerdict::Deny { rule, reason } if policy.audit() => {
                (RuleRef::Policy(rule), Some(reason.to_string()))
            }
            NameVerdict::Deny { rule, reason } => {
                let mut r = reply(Some(query), ResponseCode::NXDomain);
                r.negative_soa(self.limits.negative_ttl);
                return (
                    r,
                    Note::deny(canon, RuleRef::Policy(rule), reason.to_string()),
                );
            }
            NameVerdict::Allow { rule } | NameVerdict::Intercept { rule, .. } => {
                (RuleRef::Policy(rule), None)
            }
        };
        let (reply, note) = self.answer(req, query, policy, src, name, rule).await;
        (reply, note.audited(would))
    }

    /// Answers a query for a name the policy allows (or, under audit, lets through).
    async fn answer(
        &self,
        req: &Message,
        query: &Query,
        policy: &CompiledPolicy,
        src: IpAddr,
        name: CanonicalName,
        rule: RuleRef,
    ) -> (Reply, Note) {
        let reply = |query: Option<&Query>, rcode| self.reply(req, query, rcode);
        let canon = Some(name.as_str().to_owned());
        if query.query_type() != RecordType::A {
            // The sandbox is IPv4-only, and every other type would only widen what an allowed
            // name can carry out: answer "no such records" without asking upstream.
            let mut r = reply(Some(query), ResponseCode::NoError);
            r.negative_soa(self.limits.negative_ttl);
            let why = format!("{} answered empty", query.query_type());
            return (r, Note::allow(canon, rule, why));
        }

        let lookup =
            tokio::time::timeout(self.limits.query_timeout, self.resolver.lookup_ipv4(&name));
        let resolved = match lookup.await {
            Ok(Ok(resolved)) => resolved,
            Ok(Err(e)) => {
                let note = Note::allow(canon, rule, format!("upstream failed: {e}"));
                return (reply(Some(query), ResponseCode::ServFail), note);
            }
            Err(_) => {
                let note = Note::allow(canon, rule, "upstream timed out");
                return (reply(Some(query), ResponseCode::ServFail), note);
            }
        };
        let (kept, refused) = filter_addrs(policy, &resolved.addrs);
        let mut r = reply(Some(query), ResponseCode::NoError);
        let mut told = String::new();
        if kept.is_empty() {
            r.negative_soa(resolved.ttl.min(self.limits.negative_ttl));
        } else {
            match self.view.answer_addrs(src, &name, &kept) {
                Ok(addrs) => {
                    if addrs != kept {
                        told = format!(" as {}", join(&addrs));
                    }
                    r.answer_a(&addrs, resolved.ttl);
                }
                Err(why) => {
                    let note = Note::allow(canon, rule, format!("no address to answer: {why}"));
                    return (reply(Some(query), ResponseCode::ServFail), note);
                }
            }
        }
        let note = match (kept.is_empty(), refused.is_empty()) {
            (true, false) => Note::deny(
                canon,
                RuleRef::AddressClass,
                format!("resolves only to refused addresses: {}", refused.join(", ")),
            ),
            (_, true) => Note::allow(canon, rule, format!("{} address(es){told}", kept.len())),
            (false, false) => Note::allow(
                canon,
                rule,
                format!(
                    "{} address(es){told}; dropped {}",
                    kept.len(),
                    refused.join(", ")
                ),
            ),
        };
        (r, note)
    }
}

impl Responder {
    /// A response to `req` with `rcode`, echoing `query`.
    fn reply(&self, req: &Message, query: Option<&Query>, rcode: ResponseCode) -> Reply {
        Reply::new(
            &req.metadata,
            query,
            req.edns.as_ref(),
            self.limits.max_udp_payload,
            rcode,
        )
    }

    /// Waits in the approval queue for a name the policy holds; `None` without a queue.
    async fn held(&self, sandbox: &str, name: &CanonicalName) -> Option<crate::hold::Outcome> {
        let approvals = self.view.approvals()?;
        Some(
            approvals
                .hold(sandbox, name, None, crate::hold::HoldKind::Dns)
                .outcome()
                .await,
        )
    }
}

/// Splits resolved addresses into those the sandbox may be told and descriptions of those it
/// may not (internal addresses outside `allow_cidrs`, threat 11).
fn filter_addrs(policy: &CompiledPolicy, addrs: &[Ipv4Addr]) -> (Vec<Ipv4Addr>, Vec<String>) {
    let mut kept = Vec::new();
    let mut refused = Vec::new();
    for ip in addrs {
        let verdict = policy.check_addr(IpAddr::V4(*ip));
        if verdict.internal_refused() {
            refused.push(format!("{ip} ({})", verdict.class));
        } else {
            kept.push(*ip);
        }
    }
    (kept, refused)
}

fn join(addrs: &[Ipv4Addr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug)]
enum NameProblem {
    Root,
    Invalid(String),
}

/// The canonical form of a question name. Labels are joined with dots only after checking that
/// none contains a dot itself, so `a.b` as one label cannot pose as two.
fn wire_to_canonical(name: &Name) -> Result<CanonicalName, NameProblem> {
    if name.is_root() {
        return Err(NameProblem::Root);
    }
    let mut raw = Vec::with_capacity(256);
    for (i, label) in name.iter().enumerate() {
        if label.contains(&b'.') {
            return Err(NameProblem::Invalid("dot inside a label".into()));
        }
        if i > 0 {
            raw.push(b'.');
        }
        raw.extend_from_slice(label);
    }
    canonicalize(&raw).map_err(|e| NameProblem::Invalid(e.to_string()))
}

/// The question name for events and logs: printable ASCII as is, other bytes (and dots or
/// backslashes inside a label) escaped as `\DDD`, so a hostile name cannot forge log lines.
fn display_name(name: &Name) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(64);
    for label in name.iter() {
        for &b in label {
            if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "\\{b:03}");
            }
        }
        out.push('.');
    }
    if out.len() > 1 {
        out.pop();
    } else if out.is_empty() {
        out.push('.');
    }
    out
}
