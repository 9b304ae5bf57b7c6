//! Email addresses as typed values: once parsed, an [`EmailAddress`] or [`Mailbox`] is known to
//! be well-formed, so nothing downstream re-checks it (parse, don't validate).
//!
//! Accepted: a bare `local@domain` or `Display Name <local@domain>`; the display name may be
//! quoted (`"Doe, Jane" <j@x.org>`); the local part may be a dot-atom or a quoted string;
//! the domain may be internationalised (it is stored in its ASCII/punycode form and checked
//! label by label). CR and LF are refused everywhere, so no header can be injected.

use std::fmt;

/// Why an address was refused: a sentence for the API's error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A syntactically valid address: `local@domain`, the domain in ASCII (IDNA) form.
///
/// Kept as the one string it is written as, with the position of its `@`: the address is
/// read whole far more often (MIME headers, columns, the envelope) than by parts, and
/// borrowing it costs nothing where formatting it from two parts cost an allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress {
    address: String,
    at: usize,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<EmailAddress, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError("the address is empty".into()));
        }
        if s.contains(['\r', '\n']) {
            return Err(AddressError(
                "the address contains a line break (CR or LF)".into(),
            ));
        }
        let at = s
            .rfind('@')
            .ok_or_else(|| AddressError(format!("'{s}' has no '@'")))?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        check_local(local).map_err(|why| AddressError(format!("'{s}': {why}")))?;
        let domain = parse_domain(domain).map_err(|why| AddressError(format!("'{s}': {why}")))?;
        let mut address = String::with_capacity(local.len() + 1 + domain.len());
        address.push_str(local);
        address.push('@');
        address.push_str(&domain);
        if address.len() > 254 {
            return Err(AddressError(format!(
                "'{s}' is longer than the 254 characters an address may have"
            )));
        }
        Ok(EmailAddress {
            address,
            at: local.len(),
        })
    }

    /// The whole address, `local@domain`.
    pub fn as_str(&self) -> &str {
        &self.address
    }

    pub fn local(&self) -> &str {
        &self.address[..self.at]
    }

    /// The domain in ASCII (punycode) form.
    pub fn domain(&self) -> &str {
        &self.address[self.at + 1..]
    }

    /// Lower-cased form used to match suppressions and contacts.
    pub fn normalized(&self) -> String {
        self.address.to_lowercase()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address)
    }
}

/// An address with an optional display name, as in `From:` or `To:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

impl Mailbox {
    pub fn parse(input: &str) -> Result<Mailbox, AddressError> {
        let s = input.trim();
        if s.contains(['\r', '\n']) {
            return Err(AddressError(
                "the address contains a line break (CR or LF)".into(),
            ));
        }
        if !s.ends_with('>') {
            return Ok(Mailbox {
                name: None,
                address: EmailAddress::parse(s)?,
            });
        }
        let open = s
            .rfind('<')
            .ok_or_else(|| AddressError(format!("'{s}' has a '>' without a '<'")))?;
        let address = EmailAddress::parse(&s[open + 1..s.len() - 1])?;
        let name = parse_display_name(s[..open].trim())?;
        Ok(Mailbox { name, address })
    }

    /// `Name <addr>` or `addr`, as the API shows it.
    pub fn display(&self) -> String {
        match &self.name {
            Some(name) if needs_quotes(name) => {
                format!(
                    "\"{}\" <{}>",
                    name.replace('\\', "\\\\").replace('"', "\\\""),
                    self.address
                )
            }
            // Joined, not formatted: a batch shows a thousand of these.
            Some(name) => [name.as_str(), " <", self.address.as_str(), ">"].concat(),
            None => self.address.as_str().to_owned(),
        }
    }
}

fn needs_quotes(name: &str) -> bool {
    name.chars().any(|c| "()<>[]:;@\\,.\"".contains(c))
}

fn parse_display_name(raw: &str) -> Result<Option<String>, AddressError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let name = if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| AddressError(format!("the display name {raw} has an unclosed quote")))?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) => out.push(n),
                    None => {
                        return Err(AddressError(format!(
                            "the display name {raw} ends with a lone backslash"
                        )));
                    }
                },
                '"' => {
                    return Err(AddressError(format!(
                        "the display name {raw} has an unescaped quote"
                    )));
                }
                c => out.push(c),
            }
        }
        out
    } else {
        if raw.contains(['<', '>', '"']) {
            return Err(AddressError(format!(
                "the display name '{raw}' contains '<', '>' or '\"'; quote it"
            )));
        }
        raw.to_string()
    };
    if name.chars().any(|c| c.is_control()) {
        return Err(AddressError(
            "the display name contains control characters".into(),
        ));
    }
    let name = name.trim().to_string();
    Ok((!name.is_empty()).then_some(name))
}

const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || ATEXT_SPECIALS.contains(c) || (!c.is_ascii() && !c.is_control())
}

fn check_local(local: &str) -> Result<(), String> {
    if local.is_empty() {
        return Err("the part before '@' is empty".into());
    }
    if local.len() > 64 {
        return Err("the part before '@' is longer than 64 characters".into());
    }
    if let Some(inner) = local.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or("the quoted part before '@' is not closed")?;
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars
                        .next()
                        .ok_or("the quoted part ends with a backslash")?;
                }
                '"' => return Err("the quoted part has an unescaped quote".into()),
                c if c.is_control() => return Err("the quoted part has control characters".into()),
                _ => {}
            }
        }
        return Ok(());
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err("the part before '@' has a misplaced dot".into());
    }
    if let Some(bad) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
        return Err(format!("the part before '@' contains '{bad}'"));
    }
    Ok(())
}

/// Checks a domain and returns its ASCII form: IDNA, at least two labels, letters, digits
/// and hyphens only, no IP address literal, a top-level label that is not all digits.
pub fn parse_domain(domain: &str) -> Result<String, String> {
    if domain.is_empty() {
        return Err("the domain is empty".into());
    }
    if domain.starts_with('[') {
        return Err("IP address literals are not accepted as domains".into());
    }
    // Borrowed when the domain is already in its ASCII form (the usual case): the only
    // allocation is the returned name. Addresses are parsed twice per email of a batch.
    let ascii = idna::domain_to_ascii_cow(domain.as_bytes(), idna::AsciiDenyList::EMPTY)
        .map_err(|_| format!("'{domain}' is not a valid domain name"))?;
    let ascii = ascii.strip_suffix('.').unwrap_or(&ascii);
    if ascii.len() > 253 {
        return Err("the domain is longer than 253 characters".into());
    }
    if ascii.split('.').count() < 2 {
        return Err(format!(
            "'{domain}' is not a full domain name (like example.com)"
        ));
    }
    for label in ascii.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("'{domain}' has an empty or too long label"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "'{domain}' has a label starting or ending with '-'"
            ));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!(
                "'{domain}' contains characters a domain may not have"
            ));
        }
    }
    let tld = ascii.rsplit('.').next().unwrap_or_default();
    if tld.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("'{domain}' looks like an IP address, not a domain"));
    }
    Ok(ascii.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_named() {
        let m = Mailbox::parse("Acme <hello@acme.test>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Acme"));
        assert_eq!(m.address.to_string(), "hello@acme.test");
        let m = Mailbox::parse("ana@example.org").unwrap();
        assert_eq!(m.name, None);
        let m = Mailbox::parse("\"Doe, Jane\" <jane@x.org>").unwrap();
        assert_eq!(m.name.as_deref(), Some("Doe, Jane"));
        assert_eq!(m.display(), "\"Doe, Jane\" <jane@x.org>");
        let m = Mailbox::parse("<only@x.org>").unwrap();
        assert_eq!(m.name, None);
    }

    #[test]
    fn quoted_local_and_idn() {
        let a = EmailAddress::parse("\"john doe\"@example.org").unwrap();
        assert_eq!(a.local(), "\"john doe\"");
        // The address's own '@' is the last one; a quoted local part may hold others.
        let a = EmailAddress::parse("\"a@b\"@example.org").unwrap();
        assert_eq!((a.local(), a.domain()), ("\"a@b\"", "example.org"));
        let a = EmailAddress::parse("jose@bücher.example").unwrap();
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        assert_eq!(a.local(), "jose");
        assert_eq!(a.as_str(), "jose@xn--bcher-kva.example");
        assert_eq!(a.to_string(), a.as_str());
        let a = EmailAddress::parse("Ana@Example.ORG").unwrap();
        assert_eq!(a.normalized(), "ana@example.org");
    }

    #[test]
    fn domains_in_their_ascii_lower_case_form() {
        assert_eq!(parse_domain("Example.ORG").unwrap(), "example.org");
        assert_eq!(parse_domain("example.org.").unwrap(), "example.org");
        assert_eq!(
            parse_domain("BÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            parse_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        let a = EmailAddress::parse("Ana@Mail.Example.ORG.").unwrap();
        assert_eq!(
            (a.as_str(), a.domain()),
            ("Ana@mail.example.org", "mail.example.org")
        );
        assert!(parse_domain("example").is_err());
        assert!(parse_domain("example..org").is_err());
        assert!(parse_domain(&format!("{}.org", "a".repeat(64))).is_err());
    }

    #[test]
    fn refusals() {
        for bad in [
            "not an address",
            "a@b",
            "@example.org",
            "a..b@example.org",
            ".a@example.org",
            "a@-x.org",
            "a@[127.0.0.1]",
            "a@1.2.3.4",
            "a@exa mple.org",
            "a@example.org\r\nBcc: x@y.org",
            "",
        ] {
            assert!(Mailbox::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Mailbox::parse("Evil\r\nBcc: x <a@b.org>").is_err());
        assert!(Mailbox::parse("\"unclosed <a@b.org>").is_err());
        let long = format!("{}@example.org", "a".repeat(65));
        assert!(EmailAddress::parse(&long).is_err());
    }
}
