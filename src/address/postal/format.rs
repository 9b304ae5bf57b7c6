//! Renders envelope lines from a metadata layout string such as `%N%n%O%n%A%n%C, %S %Z`.
//!
//! Placeholders: `%N` name, `%O` organisation, `%A` street address lines, `%D` dependent
//! locality, `%C` city, `%S` state, `%Z` postal code, `%X` sorting code, `%n` new line.
//! Text between placeholders is a separator or a label ("〒", "CH-"). As in
//! libaddressinput, a separator is dropped together with an empty field, so a missing state
//! never leaves a dangling comma, and lines left empty are not printed.

/// The values to place in a layout. Empty strings count as absent.
#[derive(Debug, Default)]
pub(super) struct LayoutValues<'a> {
    pub name: Option<&'a str>,
    pub organization: Option<&'a str>,
    pub address_lines: Vec<&'a str>,
    pub city: Option<&'a str>,
    pub state: Option<&'a str>,
    pub postal_code: Option<&'a str>,
}

/// One piece of a layout line.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'f> {
    Literal(&'f str),
    Field(char),
}

/// Renders `layout` into envelope lines.
pub(super) fn render(layout: &str, values: &LayoutValues<'_>) -> Vec<String> {
    let mut lines = Vec::new();
    for layout_line in layout.split("%n") {
        let pieces = parse_line(layout_line);
        let only_address = matches!(pieces.as_slice(), [Piece::Field('A')]);
        if only_address {
            lines.extend(
                values
                    .address_lines
                    .iter()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_owned()),
            );
            continue;
        }
        let rendered = render_line(&pieces, values);
        if !rendered.is_empty() {
            lines.push(rendered);
        }
    }
    lines
}

/// Splits a layout line into literals and placeholders.
fn parse_line(line: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find('%') {
        if at > 0 {
            pieces.push(Piece::Literal(&rest[..at]));
        }
        let mut after = rest[at + 1..].chars();
        match after.next() {
            Some(letter) => {
                pieces.push(Piece::Field(letter));
                rest = after.as_str();
            }
            None => {
                rest = "";
            }
        }
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    pieces
}

/// The value of one placeholder, or `None` when the field is empty or unknown.
fn field_value(letter: char, values: &LayoutValues<'_>) -> Option<String> {
    let value = match letter {
        'N' => values.name.map(str::to_owned),
        'O' => values.organization.map(str::to_owned),
        'A' => {
            let joined: Vec<&str> = values
                .address_lines
                .iter()
                .map(|l| l.trim())
                .filter(|l| !l.is_empty())
                .collect();
            Some(joined.join(", "))
        }
        'C' => values.city.map(str::to_owned),
        'S' => values.state.map(str::to_owned),
        'Z' => values.postal_code.map(str::to_owned),
        // Dependent locality and sorting code have no input field.
        _ => None,
    };
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Renders one line: a literal is printed only between two printed fields, or before the
/// first field when no field precedes it in the line (a label such as "〒" that belongs to
/// the field after it). A line made only of literals ("GUERNSEY") is printed as is.
fn render_line(pieces: &[Piece<'_>], values: &LayoutValues<'_>) -> String {
    if pieces.iter().all(|p| matches!(p, Piece::Literal(_))) {
        let text: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(text) => *text,
                Piece::Field(_) => "",
            })
            .collect();
        return text.trim().to_owned();
    }
    let mut out = String::new();
    let mut pending = String::new();
    let mut seen_field = false;
    for piece in pieces {
        match piece {
            Piece::Literal(text) => pending.push_str(text),
            Piece::Field(letter) => {
                // The separator before an empty field goes with it.
                if let Some(value) = field_value(*letter, values) {
                    if !out.is_empty() || !seen_field {
                        out.push_str(&pending);
                    }
                    out.push_str(&value);
                }
                pending.clear();
                seen_field = true;
            }
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(
        city: Option<&'a str>,
        state: Option<&'a str>,
        zip: Option<&'a str>,
    ) -> LayoutValues<'a> {
        LayoutValues {
            name: Some("Jane Doe"),
            organization: None,
            address_lines: vec!["1 Main St", ""],
            city,
            state,
            postal_code: zip,
        }
    }

    #[test]
    fn separators_go_with_empty_fields() {
        let fmt = "%N%n%O%n%A%n%C, %S %Z";
        assert_eq!(
            render(fmt, &values(Some("X"), Some("CA"), Some("1"))),
            ["Jane Doe", "1 Main St", "X, CA 1"]
        );
        assert_eq!(render(fmt, &values(Some("X"), None, Some("1")))[2], "X 1");
        assert_eq!(render(fmt, &values(None, Some("CA"), Some("1")))[2], "CA 1");
        assert_eq!(
            render(fmt, &values(Some("X"), Some("CA"), None))[2],
            "X, CA"
        );
        assert_eq!(render(fmt, &values(None, None, None)).len(), 2);
    }

    #[test]
    fn labels_before_a_field_are_kept_only_with_it() {
        assert_eq!(
            render("〒%Z%n%S", &values(None, Some("東京都"), Some("100-0001"))),
            ["〒100-0001", "東京都"]
        );
        assert_eq!(render("〒%Z%n%S", &values(None, Some("S"), None)), ["S"]);
        assert_eq!(
            render("CH-%Z %C", &values(Some("BERN"), None, Some("3000"))),
            ["CH-3000 BERN"]
        );
        assert_eq!(
            render("CH-%Z %C", &values(Some("BERN"), None, None)),
            ["BERN"]
        );
        assert_eq!(
            render("%A%nGUERNSEY", &values(None, None, None)),
            ["1 Main St", "GUERNSEY"]
        );
    }

    #[test]
    fn address_lines_join_when_sharing_a_line() {
        let mut v = values(None, Some("TOKYO"), None);
        v.address_lines = vec!["1-2-3 Shibuya", "Shibuya-ku"];
        assert_eq!(render("%A, %S", &v), ["1-2-3 Shibuya, Shibuya-ku, TOKYO"]);
    }
}
