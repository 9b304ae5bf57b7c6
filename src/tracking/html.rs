//! Rewrites the HTML of one copy for tracking, with a real HTML rewriter (lol_html): links
//! (`<a href>` and `<area href>` with an http(s) URL) go through the click redirect, and a
//! 1x1 pixel is added at the end of `<body>` (or of the document when it has no body).

use std::cell::Cell;

use lol_html::html_content::ContentType;
use lol_html::{RewriteStrSettings, element, end, rewrite_str};

/// Turns a link's target into the tracked URL; `None` leaves the link alone.
pub type ClickRewrite<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Tracking to apply to one copy.
pub struct Tracking<'a> {
    pub click: Option<ClickRewrite<'a>>,
    /// The open pixel's URL.
    pub pixel: Option<&'a str>,
}

/// True for the links click tracking rewrites: absolute http(s) URLs.
pub fn is_trackable(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// Decodes the character references an attribute value may hold (`&amp;`, `&#x2f;`, ...),
/// so the URL recorded is the one a browser would follow.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('&') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos..];
        let end = rest[1..].find(';').map(|i| i + 1).filter(|&i| i <= 10);
        let decoded = end.and_then(|i| {
            let name = &rest[1..i];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => {
                    let num = name.strip_prefix('#')?;
                    let code = match num.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                        None => num.parse().ok()?,
                    };
                    char::from_u32(code)
                }
            }?;
            Some((c, i))
        });
        match decoded {
            Some((c, i)) => {
                out.push(c);
                rest = &rest[i + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The pixel's markup.
fn pixel_html(url: &str) -> String {
    format!(
        r#"<img src="{url}" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0" />"#
    )
}

/// Applies `tracking` to `html`. Fails only when the rewriter does (it is lenient with
/// broken HTML, like a browser).
pub fn apply(html: &str, tracking: &Tracking<'_>) -> Result<String, String> {
    if tracking.click.is_none() && tracking.pixel.is_none() {
        return Ok(html.to_string());
    }
    let body_seen = Cell::new(false);
    let pixel = tracking.pixel.map(pixel_html);
    let mut settings = RewriteStrSettings::new();
    if let Some(click) = tracking.click {
        settings = settings.append_element_content_handler(element!("a[href], area[href]", |el| {
            if let Some(href) = el.get_attribute("href") {
                let target = decode_entities(href.trim());
                if is_trackable(&target)
                    && let Some(tracked) = click(&target)
                {
                    el.set_attribute("href", &tracked)?;
                }
            }
            Ok(())
        }));
    }
    if let Some(pixel) = &pixel {
        settings = settings
            .append_element_content_handler(element!("body", |el| {
                if !body_seen.get() {
                    body_seen.set(true);
                    el.append(pixel, ContentType::Html);
                }
                Ok(())
            }))
            .append_document_content_handler(end!(|end| {
                if !body_seen.get() {
                    end.append(pixel, ContentType::Html);
                }
                Ok(())
            }));
    }
    rewrite_str(html, settings).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_http_links_and_adds_the_pixel_in_body() {
        let click = |u: &str| Some(format!("https://t.test/c/{}", u.len()));
        let html = r##"<html><body><a href="https://a.test/x?y=1&amp;z=2">A</a> <a href="mailto:a@b.test">M</a> <a href="#top">T</a><A HREF="HTTP://B.TEST">B</A></body></html>"##;
        let out = apply(
            html,
            &Tracking {
                click: Some(&click),
                pixel: Some("https://t.test/o/1"),
            },
        )
        .unwrap();
        assert!(out.contains(r#"href="https://t.test/c/24""#), "{out}");
        assert!(out.contains(r#"href="mailto:a@b.test""#));
        assert!(out.contains(r##"href="#top""##));
        assert!(out.contains(r#"HREF="https://t.test/c/13""#), "{out}");
        assert!(out.contains(r#"<img src="https://t.test/o/1""#));
        assert!(out.ends_with("/></body></html>"), "{out}");
    }

    #[test]
    fn pixel_without_body_goes_at_the_end() {
        let out = apply(
            "<p>Hi</p>",
            &Tracking {
                click: None,
                pixel: Some("https://t.test/o/1"),
            },
        )
        .unwrap();
        assert!(out.starts_with("<p>Hi</p><img"), "{out}");
    }

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities("https:&#x2f;&#x2F;a.test&#47;?a=1&amp;b=2&bogus;&"),
            "https://a.test/?a=1&b=2&bogus;&"
        );
    }
}
