//! Builds the MIME message of an email with mail-builder: multipart/alternative text + html,
//! a text part derived from the HTML when none is given (links kept as text), attachments,
//! inline `cid:` parts, custom headers, `Message-ID: <msg_...@domain>` and `Date`.

use std::borrow::Cow;
use std::cell::RefCell;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::MimePart;

use super::request::EmailDraft;
use crate::address::Mailbox;

/// Extra headers the server adds (List-Unsubscribe for marketing, ...).
pub type ExtraHeaders = Vec<(String, String)>;

fn address(m: &Mailbox) -> Address<'_> {
    Address::new_address(m.name.as_deref(), m.address.as_str())
}

fn address_list(list: &[Mailbox]) -> Address<'_> {
    if list.len() == 1 {
        address(&list[0])
    } else {
        Address::new_list(list.iter().map(address).collect())
    }
}

/// Plain text from HTML: readable lines, links as footnotes, no decoration.
pub fn html_to_text(html: &str) -> String {
    html2text::config::plain()
        .string_from_read(html.as_bytes(), 78)
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// The message-id (without angle brackets) of email `id` sent from `domain`.
pub fn message_id(email_id: &str, domain: &str) -> String {
    [email_id, "@", domain].concat()
}

/// The full message bytes (CRLF line endings), ready for SMTP.
///
/// The builder borrows the draft's strings and bytes rather than copies them, and writes
/// into a buffer sized for the message up front: batches build a thousand messages per
/// request, and the copies and the buffer's doublings were a good part of it.
pub fn build(
    draft: &EmailDraft,
    message_id: &str,
    date_unix: i64,
    extra: &ExtraHeaders,
) -> std::io::Result<Vec<u8>> {
    let mut builder = MessageBuilder::new()
        .from(address(&draft.from))
        .subject(Text::new(draft.subject.as_str()))
        .message_id(message_id)
        .header("Date", Raw::new(date_header(date_unix)));
    if !draft.to.is_empty() {
        builder = builder.to(address_list(&draft.to));
    }
    if !draft.cc.is_empty() {
        builder = builder.cc(address_list(&draft.cc));
    }
    if !draft.reply_to.is_empty() {
        builder = builder.reply_to(address_list(&draft.reply_to));
    }
    for (name, value) in draft.headers.iter().chain(extra.iter()) {
        builder = builder.header(name.as_str(), Raw::new(value.as_str()));
    }
    let text: Option<Cow<'_, str>> = match (&draft.text, &draft.html) {
        (Some(text), _) => Some(Cow::Borrowed(text)),
        (None, Some(html)) => Some(Cow::Owned(html_to_text(html))),
        (None, None) => None,
    };
    let mut size = HEADERS_SIZE + text.as_ref().map_or(0, |t| t.len());
    if let Some(text) = text {
        builder = builder.text_body(text);
    }
    if let Some(html) = &draft.html {
        size += html.len();
        builder = builder.html_body(html.as_str());
    }
    for a in &draft.attachments {
        // Base64: four characters for three bytes, and a line break per 76.
        size += PART_HEADERS_SIZE + a.content.len() / 3 * 4 * 78 / 76 + 4;
        builder = match &a.content_id {
            // mail-builder's `inline` drops the file name; keep it, so clients that save the
            // image (or show it as an attachment) get the name the sender gave.
            Some(cid) if !a.filename.is_empty() => {
                let disposition =
                    ContentType::new("inline").attribute("filename", a.filename.as_str());
                let part = MimePart::new(a.content_type.as_str(), a.content.as_slice())
                    .header("Content-Disposition", disposition)
                    .cid(cid.as_str());
                builder.attachments.get_or_insert_with(Vec::new).push(part);
                builder
            }
            Some(cid) => {
                builder.inline(a.content_type.as_str(), cid.as_str(), a.content.as_slice())
            }
            None => builder.attachment(
                a.content_type.as_str(),
                a.filename.as_str(),
                a.content.as_slice(),
            ),
        };
    }
    // Text parts grow a little when encoded (quoted-printable, CRLF line ends): a tenth
    // more, so that the buffer is seldom grown at the end.
    let mut message = Vec::with_capacity(size + size / 10);
    builder.write_to(&mut message)?;
    Ok(message)
}

thread_local! {
    /// The `Date` header of the second this thread last built a message for.
    static LAST_DATE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// The `Date` header's text for `date_unix`, as mail-builder writes it. Formatted once per
/// second and thread: the messages of a batch share their second, and formatting the date
/// anew was a twentieth of preparing each email.
fn date_header(date_unix: i64) -> String {
    LAST_DATE.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != date_unix {
            *last = (date_unix, Date::new(date_unix).to_rfc822());
        }
        last.1.clone()
    })
}

/// Room for a message's headers and MIME structure, besides its parts' content.
const HEADERS_SIZE: usize = 1024;
/// Room for the headers and boundary of an attachment.
const PART_HEADERS_SIZE: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emails::request::SendRequest;
    use mail_parser::MimeHeaders;

    fn draft(json: &str) -> EmailDraft {
        serde_json::from_str::<SendRequest>(json)
            .unwrap()
            .into_draft(false)
            .unwrap()
    }

    #[test]
    fn builds_alternative_with_derived_text() {
        let d = draft(
            r#"{"from":"Acme <hello@acme.test>","to":["ana@example.org","Bo <bo@example.org>"],
                "subject":"Hi ünïcode","html":"<p>Thanks <a href=\"https://x.test/r\">receipt</a></p>",
                "headers":{"X-Entity-Ref-ID":"123"}}"#,
        );
        let raw = build(&d, "msg_1@acme.test", 1_775_899_937, &Vec::new()).unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.subject(), Some("Hi ünïcode"));
        assert_eq!(parsed.message_id(), Some("msg_1@acme.test"));
        assert!(parsed.body_text(0).unwrap().contains("https://x.test/r"));
        assert!(parsed.body_html(0).unwrap().contains("<a href"));
        assert_eq!(parsed.to().unwrap().iter().count(), 2);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("X-Entity-Ref-ID: 123"));
        assert!(text.contains("multipart/alternative"));
        assert!(!text.contains("Bcc"));
    }

    #[test]
    fn date_header_of_each_second() {
        let d = draft(r#"{"from":"a@acme.test","to":"b@example.org","subject":"s","text":"t"}"#);
        let date_of = |unix: i64| {
            let raw = build(&d, "msg_1@acme.test", unix, &Vec::new()).unwrap();
            let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
            let text = String::from_utf8_lossy(&raw).into_owned();
            assert_eq!(text.matches("\r\nDate: ").count(), 1, "{text}");
            parsed.date().unwrap().to_timestamp()
        };
        // The second message of a second reuses its text; the next second gets its own.
        assert_eq!(date_of(1_775_899_937), 1_775_899_937);
        assert_eq!(date_of(1_775_899_937), 1_775_899_937);
        assert_eq!(date_of(1_775_899_938), 1_775_899_938);
        assert_eq!(date_header(86_400 * 3), "Sun, 4 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn attachments_and_inline_parts() {
        let d = draft(
            r#"{"from":"a@acme.test","to":"b@example.org","subject":"s","html":"<img src=\"cid:logo\">",
                "attachments":[{"filename":"r.pdf","content":"JVBERi0xLjQ="},
                               {"content_id":"logo","filename":"logo.png","content":"iVBORw0KGgo="}]}"#,
        );
        let raw = build(&d, "m@acme.test", 0, &Vec::new()).unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(parsed.attachment_count(), 2);
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("application/pdf"));
        assert!(text.contains("Content-ID: <logo>"));
        let logo = parsed
            .attachments()
            .find(|p| p.content_id() == Some("logo"))
            .unwrap();
        assert_eq!(logo.attachment_name(), Some("logo.png"));
    }
}
