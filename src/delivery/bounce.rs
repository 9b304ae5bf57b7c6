//! Bounce classification: what an SMTP reply says about a recipient.
//!
//! The worker turns a refused recipient into a status (bounced / retry) and maybe a
//! suppression; this module only reads the reply. It trusts the basic reply code for the
//! hard/soft split (RFC 5321 §4.2.1) and the enhanced status code for the reason
//! (RFC 3463 subjects: x.1 addressing, x.2 mailbox, x.3 mail system, x.4 network/routing,
//! x.5 protocol, x.6 content, x.7 security/policy). Replies without an enhanced code fall
//! back on the basic code and a few well-known phrases.

use std::fmt;

use super::smtp::Reply;

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceKind {
    /// Permanent: retrying the same message to the same address will fail again.
    Hard,
    /// Transient: a later attempt may succeed (4xx, full mailbox, network faults).
    Soft,
}

/// Why the message was refused, coarse enough for dashboards and suppression policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceCategory {
    /// The recipient's mailbox: unknown, disabled, moved or full.
    Mailbox,
    /// The recipient's domain or mail system: no such host, null MX, not accepting mail.
    Domain,
    /// Refused by policy: spam or reputation, sender authentication, blocklists, relaying.
    Policy,
    /// The message itself: too big, bad media, content rejected.
    Content,
    /// Routing or connection trouble (also used for session faults without a reply).
    Network,
    /// The SMTP dialogue went wrong (syntax, sequence, too many recipients).
    Protocol,
    /// Nothing more specific is known.
    Other,
}

/// The result of [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    /// Hard (permanent) or soft (transient).
    pub kind: BounceKind,
    /// The reason.
    pub category: BounceCategory,
}

impl Classification {
    /// What a session fault (connect, TLS, timeout, dropped connection) amounts to: a soft
    /// network bounce, since nothing was refused.
    pub const NETWORK: Classification = Classification {
        kind: BounceKind::Soft,
        category: BounceCategory::Network,
    };

    /// True for a permanent failure.
    pub fn is_hard(&self) -> bool {
        self.kind == BounceKind::Hard
    }
}

impl fmt::Display for BounceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BounceKind::Hard => "hard",
            BounceKind::Soft => "soft",
        })
    }
}

impl fmt::Display for BounceCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BounceCategory::Mailbox => "mailbox",
            BounceCategory::Domain => "domain",
            BounceCategory::Policy => "policy",
            BounceCategory::Content => "content",
            BounceCategory::Network => "network",
            BounceCategory::Protocol => "protocol",
            BounceCategory::Other => "other",
        })
    }
}

/// Classifies a refusal reply (4xx or 5xx). A 2xx/3xx reply is not a bounce; it is
/// reported as soft/other so a caller bug never produces a hard bounce.
pub fn classify(reply: &Reply) -> Classification {
    let permanent = (500..600).contains(&reply.code);
    let transient = (400..500).contains(&reply.code);
    if !permanent && !transient {
        return soft(BounceCategory::Other);
    }
    let (category, soft_anyway) = match reply.enhanced {
        Some((_, subject, detail)) if subject != 0 || detail != 0 => by_enhanced(subject, detail),
        _ => by_basic_code(reply.code, &reply.text),
    };
    let kind = if permanent && !soft_anyway {
        BounceKind::Hard
    } else {
        BounceKind::Soft
    };
    Classification { kind, category }
}

fn soft(category: BounceCategory) -> Classification {
    Classification {
        kind: BounceKind::Soft,
        category,
    }
}

/// Category from the enhanced status code's subject and detail; the flag marks the few
/// 5xx reasons that are transient in practice (a full mailbox empties).
fn by_enhanced(subject: u16, detail: u16) -> (BounceCategory, bool) {
    use BounceCategory::*;
    match (subject, detail) {
        // x.1.2 bad destination system, x.1.10 null MX (RFC 7505).
        (1, 2) | (1, 10) => (Domain, false),
        // x.1.7 / x.1.8: our sender address is refused.
        (1, 7) | (1, 8) => (Policy, false),
        (1, _) => (Mailbox, false),
        // x.2.2 mailbox full: transient even when sent as 5xx.
        (2, 2) => (Mailbox, true),
        // x.2.3 message length exceeds administrative limit.
        (2, 3) => (Content, false),
        (2, _) => (Mailbox, false),
        // x.3.4 message too big for system.
        (3, 4) => (Content, false),
        (3, _) => (Domain, false),
        // x.4.4 unable to route: the domain has no usable mail host.
        (4, 4) => (Domain, false),
        (4, _) => (Network, false),
        (5, _) => (Protocol, false),
        (6, _) => (Content, false),
        (7, _) => (Policy, false),
        _ => (Other, false),
    }
}

/// Category from the basic reply code (RFC 5321 §4.2.2, RFC 7504) and common phrases.
fn by_basic_code(code: u16, text: &str) -> (BounceCategory, bool) {
    use BounceCategory::*;
    let text = text.to_ascii_lowercase();
    const POLICY_WORDS: [&str; 8] = [
        "spam",
        "blocked",
        "blacklist",
        "blocklist",
        "reputation",
        "policy",
        "spf",
        "dmarc",
    ];
    if POLICY_WORDS.iter().any(|w| text.contains(w)) {
        return (Policy, false);
    }
    match code {
        // 552 "exceeded storage allocation" and 452 "insufficient storage": a full mailbox.
        552 | 452 => (Mailbox, true),
        550 | 551 | 553 | 450 => (Mailbox, false),
        521 | 556 => (Domain, false),
        530 | 534 | 535 | 538 => (Policy, false),
        500..=504 => (Protocol, false),
        421 => (Network, false),
        _ => (Other, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(code: u16, enhanced: Option<(u8, u16, u16)>, text: &str) -> Reply {
        Reply {
            code,
            enhanced,
            text: text.to_string(),
        }
    }

    fn c(kind: BounceKind, category: BounceCategory) -> Classification {
        Classification { kind, category }
    }

    #[test]
    fn user_unknown_is_hard_mailbox() {
        let r = reply(550, Some((5, 1, 1)), "User unknown");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Mailbox));
    }

    #[test]
    fn mailbox_full_is_soft_even_as_5xx() {
        let r = reply(552, Some((5, 2, 2)), "Mailbox full");
        assert_eq!(classify(&r), c(BounceKind::Soft, BounceCategory::Mailbox));
        let r = reply(
            552,
            None,
            "Requested mail action aborted: exceeded storage allocation",
        );
        assert_eq!(classify(&r), c(BounceKind::Soft, BounceCategory::Mailbox));
    }

    #[test]
    fn security_subject_is_policy() {
        for detail in [1, 26, 509] {
            let r = reply(550, Some((5, 7, detail)), "Rejected");
            assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Policy));
        }
        let r = reply(450, Some((4, 7, 1)), "Try again later");
        assert_eq!(classify(&r), c(BounceKind::Soft, BounceCategory::Policy));
    }

    #[test]
    fn transient_codes_are_soft() {
        let r = reply(451, Some((4, 3, 0)), "Local error");
        assert_eq!(classify(&r).kind, BounceKind::Soft);
        let r = reply(421, None, "Service not available");
        assert_eq!(classify(&r), c(BounceKind::Soft, BounceCategory::Network));
        let r = reply(450, None, "Mailbox busy");
        assert_eq!(classify(&r), c(BounceKind::Soft, BounceCategory::Mailbox));
    }

    #[test]
    fn domain_and_content_reasons() {
        let r = reply(556, Some((5, 1, 10)), "Recipient address has null MX");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Domain));
        let r = reply(550, Some((5, 4, 4)), "Unable to route");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Domain));
        let r = reply(552, Some((5, 3, 4)), "Message too big");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Content));
        let r = reply(554, Some((5, 6, 0)), "Content rejected");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Content));
        let r = reply(501, Some((5, 5, 2)), "Syntax error");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Protocol));
    }

    #[test]
    fn basic_codes_without_enhanced_status() {
        let r = reply(550, None, "No such user here");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Mailbox));
        let r = reply(554, None, "Message rejected as spam");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Policy));
        let r = reply(554, Some((5, 0, 0)), "Transaction failed");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Other));
        let r = reply(521, None, "Does not accept mail");
        assert_eq!(classify(&r), c(BounceKind::Hard, BounceCategory::Domain));
    }

    #[test]
    fn success_is_never_a_hard_bounce() {
        let r = reply(250, Some((2, 0, 0)), "Ok");
        assert_eq!(classify(&r).kind, BounceKind::Soft);
    }

    #[test]
    fn network_constant_is_soft() {
        assert!(!Classification::NETWORK.is_hard());
    }
}
