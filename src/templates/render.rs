//! The user-template engine: compiles and renders the templates users save through
//! `/v1/templates` (Jinja syntax, rendered with minijinja). Pure: no I/O, no database.
//!
//! # Model
//!
//! A template has three optional parts, `subject`, `html` and `text`, and may be wrapped by a
//! *layout* (another template) whose `html` / `text` say where the child goes with
//! `{{ content }}` (Postmark's layouts). [`CompiledTemplate::compile`] parses every part once
//! into its own minijinja [`Environment`]; [`CompiledTemplate::render`] can then be called any
//! number of times, from any thread (the type is `Send + Sync`; share it in an [`Arc`], see
//! [`TemplateCache`]).
//!
//! # Escaping
//!
//! Auto-escaping is chosen by the internal template name: the `html` parts are HTML-escaped
//! (`<` → `&lt;`, also `&`, `>`, `"`, `'`, `/`), `subject` and `text` are not escaped at all.
//! `{{ x|safe }}` opts out in HTML. The layout's `content` is the child's *rendered* output,
//! passed as a safe string into the layout's html (so it is not escaped a second time) and as
//! a plain string into the layout's text (which is not escaped anyway).
//!
//! # Undefined variables
//!
//! Strict ([`UndefinedBehavior::Strict`]): printing, iterating, or taking an attribute of a
//! variable the caller did not supply is [`TemplateError::MissingVariable`], naming the
//! variable (or the dotted path, e.g. `contact.first_name`) and the part. Even a bare truth
//! test `{% if coupon %}` fails when `coupon` is missing; optional variables are written with
//! `{% if coupon is defined %}`, `{{ coupon|default("none") }}` or `coupon is undefined`,
//! which all work under strict mode (see the tests).
//!
//! # Sandbox
//!
//! * No loader, and a path-join callback that renames every `include` / `extends` / `import`
//!   / `from` target to a name that cannot exist, so these tags fail at render time with
//!   [`TemplateError::Render`] ("cannot include, extend or import"); the parts of one template
//!   cannot load each other either. (`{% include "x" ignore missing %}` renders nothing.) There
//!   is no file, network or environment access in minijinja's built-ins, and the `debug()`
//!   global (which dumps engine state) is removed.
//! * Fuel ([`Limits::fuel`], per part render): every VM instruction and roughly every 64 bytes
//!   of data the template creates cost one unit; when it runs out the render stops with
//!   [`TemplateError::FuelExhausted`]. This bounds both time and the memory a template can
//!   allocate (about `fuel * 64` bytes, e.g. strings built in `{% set %}` blocks or macros).
//! * Recursion ([`Limits::recursion_limit`], minijinja depth units: a macro call costs 4, a
//!   loop or `if` 1): [`TemplateError::RecursionLimit`].
//! * Output size ([`Limits::max_output_bytes`], per part): minijinja has no output cap, so the
//!   output goes through a writer that refuses the write that would cross the cap. A failed
//!   write makes minijinja abort the render immediately (the error propagates out of the VM),
//!   so work stops at the cap instead of being measured afterwards:
//!   [`TemplateError::OutputTooLarge`]. Output that is captured before being written (macros,
//!   `{% set %}` blocks, `{% filter %}`) is bounded by the fuel, as above.
//! * Source size ([`Limits::max_source_bytes`], per part) is checked before parsing:
//!   [`TemplateError::SourceTooLarge`]. The parser has its own nesting limit (a syntax error).
//!
//! # Not checked at compile (save) time
//!
//! minijinja resolves filters, tests and `include`-like tags when rendering, so an unknown
//! filter (`{{ x|nope }}`) or an `{% include %}` only fails at render time.
//!
//! This module only uses `self::`/`super::` paths; it lives at `crate::templates::render`.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::Arc;

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};

/// Default fuel per part render (about 1M VM steps; at most ~64 MiB of data created).
pub const DEFAULT_FUEL: u64 = 1_000_000;
/// Default recursion limit, in minijinja depth units (a macro call costs 4: ~50 nested calls).
pub const DEFAULT_RECURSION_LIMIT: usize = 200;
/// Default cap on one rendered part: 2 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 2 * 1024 * 1024;
/// Default cap on one part's source: 512 KiB.
pub const DEFAULT_MAX_SOURCE_BYTES: usize = 512 * 1024;

/// Variable name under which a layout receives the child's rendered output.
pub const LAYOUT_CONTENT_VARIABLE: &str = "content";

/// The sandbox limits a template is compiled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel for one part render (see the module docs).
    pub fuel: u64,
    /// minijinja recursion limit (capped by minijinja at 500 without its `stacker` feature).
    pub recursion_limit: usize,
    /// Largest rendered part, in bytes.
    pub max_output_bytes: usize,
    /// Largest part source, in bytes.
    pub max_source_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: DEFAULT_FUEL,
            recursion_limit: DEFAULT_RECURSION_LIMIT,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_source_bytes: DEFAULT_MAX_SOURCE_BYTES,
        }
    }
}

/// The sources of a template (or of a layout). `None` means the part is absent; `Some("")` is
/// a part that renders to an empty string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TemplateParts {
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
}

/// The result of a render. A part is `Some` exactly when the template has that part (a
/// layout never adds a part the template lacks, and its `subject` is not used).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub subject: Option<String>,
    pub html: Option<String>,
    pub text: Option<String>,
}

/// Which piece of source an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Subject,
    Html,
    Text,
    LayoutHtml,
    LayoutText,
}

impl Part {
    /// A short name for API messages: `subject`, `html`, `text`, `layout html`, `layout text`.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Html => "html",
            Part::Text => "text",
            Part::LayoutHtml => "layout html",
            Part::LayoutText => "layout text",
        }
    }

    /// The internal minijinja template name; the `.html` suffix turns on HTML escaping.
    fn template_name(self) -> &'static str {
        match self {
            Part::Subject => "subject.txt",
            Part::Html => "body.html",
            Part::Text => "body.txt",
            Part::LayoutHtml => "layout.html",
            Part::LayoutText => "layout.txt",
        }
    }

    fn is_layout(self) -> bool {
        matches!(self, Part::LayoutHtml | Part::LayoutText)
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that can go wrong compiling or rendering a template. The `Display` text is
/// meant to be returned as the API error message; [`TemplateError::code`] gives the API code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The part does not parse.
    #[error("{}", syntax_message(*.part, *.line, *.column, .message))]
    Syntax {
        part: Part,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A part's source is longer than [`Limits::max_source_bytes`].
    #[error(
        "the {part} template is too large: {size_bytes} bytes, the limit is {limit_bytes} bytes"
    )]
    SourceTooLarge {
        part: Part,
        size_bytes: usize,
        limit_bytes: usize,
    },
    /// The layout has an html (text) part that never uses `{{ content }}` while the template
    /// has an html (text) part: the template's body would be dropped.
    #[error(
        "the {part} never uses {{{{ content }}}}, so the template's body would be lost: add {{{{ content }}}} where the template's body goes"
    )]
    LayoutWithoutContent { part: Part },
    /// A variable the template uses was not supplied (`name` may be a dotted path).
    #[error("{}", missing_message(*.part, .name, *.line))]
    MissingVariable {
        part: Part,
        name: String,
        line: Option<usize>,
    },
    /// The fuel (work) limit was hit.
    #[error(
        "rendering the {part} stopped at the work limit ({fuel} steps): a loop or filter does too much work, or loops over too much data"
    )]
    FuelExhausted { part: Part, fuel: u64 },
    /// The recursion limit was hit.
    #[error(
        "rendering the {part} stopped at the recursion limit (depth {limit}): a macro probably calls itself without end, or blocks are nested too deeply"
    )]
    RecursionLimit { part: Part, limit: usize },
    /// The rendered part would be larger than [`Limits::max_output_bytes`].
    #[error(
        "the rendered {part} is larger than the output size limit of {limit_bytes} bytes; rendering was stopped"
    )]
    OutputTooLarge { part: Part, limit_bytes: usize },
    /// Any other render failure (type errors, unknown filters, `include`, ...).
    #[error("{}", render_message(*.part, *.line, .message))]
    Render {
        part: Part,
        line: Option<usize>,
        message: String,
    },
}

impl TemplateError {
    /// The API error code: `template_syntax_error` for problems with the template itself that
    /// are found when compiling (saving), `template_render_error` for everything found while
    /// rendering with given variables.
    pub fn code(&self) -> &'static str {
        match self {
            TemplateError::Syntax { .. }
            | TemplateError::SourceTooLarge { .. }
            | TemplateError::LayoutWithoutContent { .. } => "template_syntax_error",
            TemplateError::MissingVariable { .. }
            | TemplateError::FuelExhausted { .. }
            | TemplateError::RecursionLimit { .. }
            | TemplateError::OutputTooLarge { .. }
            | TemplateError::Render { .. } => "template_render_error",
        }
    }

    /// The part the error is about.
    pub fn part(&self) -> Part {
        match self {
            TemplateError::Syntax { part, .. }
            | TemplateError::SourceTooLarge { part, .. }
            | TemplateError::LayoutWithoutContent { part }
            | TemplateError::MissingVariable { part, .. }
            | TemplateError::FuelExhausted { part, .. }
            | TemplateError::RecursionLimit { part, .. }
            | TemplateError::OutputTooLarge { part, .. }
            | TemplateError::Render { part, .. } => *part,
        }
    }
}

fn at_line(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" at line {l}, column {c}"),
        (Some(l), None) => format!(" at line {l}"),
        _ => String::new(),
    }
}

fn syntax_message(part: Part, line: Option<usize>, column: Option<usize>, message: &str) -> String {
    format!(
        "syntax error in the {part} template{}: {message}",
        at_line(line, column)
    )
}

fn missing_message(part: Part, name: &str, line: Option<usize>) -> String {
    format!(
        "the variable `{name}` used in the {part}{} is not defined: supply it in the variables, or make it optional with `{{% if {name} is defined %}}` or `{{{{ {name}|default(\"\") }}}}`",
        at_line(line, None)
    )
}

fn render_message(part: Part, line: Option<usize>, message: &str) -> String {
    format!(
        "could not render the {part}{}: {message}",
        at_line(line, None)
    )
}

/// A template compiled once, rendered many times. Owns a minijinja `Environment<'static>`
/// holding one compiled template per present part. `Send + Sync`; cheap to share in an `Arc`.
pub struct CompiledTemplate {
    env: Environment<'static>,
    has_subject: bool,
    html: Option<Body>,
    text: Option<Body>,
    variables: Vec<String>,
    limits: Limits,
}

/// Which templates make up the html or text body.
#[derive(Debug, Clone, Copy)]
struct Body {
    /// `Part::Html` or `Part::Text`.
    own: Part,
    /// The layout part wrapping it, if any.
    layout: Option<Part>,
}

impl fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("has_subject", &self.has_subject)
            .field("html", &self.html)
            .field("text", &self.text)
            .field("variables", &self.variables)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Checks a template at save time: every present part must parse (same as compiling it
/// without a layout). Returns the variables it uses (see [`CompiledTemplate::variables`]).
pub fn check_syntax(parts: &TemplateParts) -> Result<Vec<String>, TemplateError> {
    CompiledTemplate::compile(parts, None).map(|t| t.variables)
}

impl CompiledTemplate {
    /// Compiles a template (and its layout, if any) with the default [`Limits`].
    pub fn compile(
        parts: &TemplateParts,
        layout: Option<&TemplateParts>,
    ) -> Result<Self, TemplateError> {
        Self::compile_with_limits(parts, layout, Limits::default())
    }

    /// Compiles a template (and its layout, if any) with the given limits.
    ///
    /// Errors: [`TemplateError::Syntax`], [`TemplateError::SourceTooLarge`] and
    /// [`TemplateError::LayoutWithoutContent`] (the layout has an html/text part without
    /// `{{ content }}` while the template has that part). The layout's `subject` is ignored.
    pub fn compile_with_limits(
        parts: &TemplateParts,
        layout: Option<&TemplateParts>,
        limits: Limits,
    ) -> Result<Self, TemplateError> {
        let mut env = sandboxed_environment(&limits);
        let mut variables = BTreeSet::new();

        let mut add = |env: &mut Environment<'static>,
                       part: Part,
                       source: &str|
         -> Result<(), TemplateError> {
            if source.len() > limits.max_source_bytes {
                return Err(TemplateError::SourceTooLarge {
                    part,
                    size_bytes: source.len(),
                    limit_bytes: limits.max_source_bytes,
                });
            }
            env.add_template_owned(part.template_name(), source.to_owned())
                .map_err(|err| syntax_error(part, source, &err))?;
            let tmpl = env
                .get_template(part.template_name())
                .map_err(|err| syntax_error(part, source, &err))?;
            let used = tmpl.undeclared_variables(false);
            if part.is_layout() && !used.contains(LAYOUT_CONTENT_VARIABLE) {
                return Err(TemplateError::LayoutWithoutContent { part });
            }
            variables.extend(
                used.into_iter()
                    .filter(|name| !(part.is_layout() && name == LAYOUT_CONTENT_VARIABLE)),
            );
            Ok(())
        };

        if let Some(src) = &parts.subject {
            add(&mut env, Part::Subject, src)?;
        }
        let mut html = None;
        if let Some(src) = &parts.html {
            add(&mut env, Part::Html, src)?;
            let mut body = Body {
                own: Part::Html,
                layout: None,
            };
            if let Some(layout_src) = layout.and_then(|l| l.html.as_ref()) {
                add(&mut env, Part::LayoutHtml, layout_src)?;
                body.layout = Some(Part::LayoutHtml);
            }
            html = Some(body);
        }
        let mut text = None;
        if let Some(src) = &parts.text {
            add(&mut env, Part::Text, src)?;
            let mut body = Body {
                own: Part::Text,
                layout: None,
            };
            if let Some(layout_src) = layout.and_then(|l| l.text.as_ref()) {
                add(&mut env, Part::LayoutText, layout_src)?;
                body.layout = Some(Part::LayoutText);
            }
            text = Some(body);
        }

        // Names minijinja provides itself (`range`, `dict`, `namespace`, ...) are not
        // variables the caller has to supply.
        let globals: BTreeSet<&str> = env.globals().map(|(name, _)| name).collect();
        let variables = variables
            .into_iter()
            .filter(|name| !globals.contains(name.as_str()))
            .collect();

        Ok(CompiledTemplate {
            has_subject: parts.subject.is_some(),
            html,
            text,
            variables,
            limits,
            env,
        })
    }

    /// The top-level variable names the template (and its layout) reads, sorted and
    /// deduplicated across subject, html and text: minijinja's `undeclared_variables`, so loop
    /// variables and names set inside the template are excluded, and so are minijinja's own
    /// globals (`range`, `dict`, `namespace`). Names the *layout* reads as `content`
    /// are excluded (the engine supplies it); everything else is included, including names the
    /// server may fill itself such as `unsubscribe_url`: filter those in the caller. A name
    /// only read under `{% if x is defined %}` is still listed (it is a static analysis).
    pub fn variables(&self) -> Vec<String> {
        self.variables.clone()
    }

    /// The limits this template was compiled with.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Renders every present part with the given variables. Parts render in the order
    /// subject, html, text and the first error is returned. The layout gets the same
    /// variables plus `content` (which replaces a caller-supplied `content` in the layout
    /// only). Does not re-parse anything.
    pub fn render(
        &self,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Rendered, TemplateError> {
        let ctx = Value::from(Serde(vars));
        let subject = if self.has_subject {
            Some(self.render_part(Part::Subject, ctx.clone(), vars)?)
        } else {
            None
        };
        let html = match self.html {
            Some(body) => Some(self.render_body(body, &ctx, vars, true)?),
            None => None,
        };
        let text = match self.text {
            Some(body) => Some(self.render_body(body, &ctx, vars, false)?),
            None => None,
        };
        Ok(Rendered {
            subject,
            html,
            text,
        })
    }

    fn render_body(
        &self,
        body: Body,
        ctx: &Value,
        vars: &serde_json::Map<String, serde_json::Value>,
        html: bool,
    ) -> Result<String, TemplateError> {
        let inner = self.render_part(body.own, ctx.clone(), vars)?;
        let Some(layout) = body.layout else {
            return Ok(inner);
        };
        let content = if html {
            // Already escaped where needed: insert as is.
            Value::from_safe_string(inner)
        } else {
            Value::from(inner)
        };
        let layout_ctx = minijinja::context! { content => content, ..ctx.clone() };
        self.render_part(layout, layout_ctx, vars)
    }

    fn render_part(
        &self,
        part: Part,
        ctx: Value,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        let tmpl =
            self.env
                .get_template(part.template_name())
                .map_err(|err| TemplateError::Render {
                    part,
                    line: None,
                    message: err.to_string(),
                })?;
        let mut out = CappedWriter::new(self.limits.max_output_bytes);
        match tmpl.render_captured_to(ctx, &mut out) {
            Ok(_) => Ok(out.into_string()),
            Err(err) => Err(self.render_error(part, err, out.overflowed, vars)),
        }
    }

    fn render_error(
        &self,
        part: Part,
        err: minijinja::Error,
        overflowed: bool,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> TemplateError {
        if overflowed {
            return TemplateError::OutputTooLarge {
                part,
                limit_bytes: self.limits.max_output_bytes,
            };
        }
        // Look through wrapped errors (minijinja wraps some in a `source` chain).
        let mut current: Option<&minijinja::Error> = Some(&err);
        while let Some(e) = current {
            match e.kind() {
                ErrorKind::OutOfFuel => {
                    return TemplateError::FuelExhausted {
                        part,
                        fuel: self.limits.fuel,
                    };
                }
                ErrorKind::InvalidOperation
                    if e.detail().is_some_and(|d| d.contains("recursion limit")) =>
                {
                    return TemplateError::RecursionLimit {
                        part,
                        limit: self.env.recursion_limit(),
                    };
                }
                _ => {}
            }
            current =
                std::error::Error::source(e).and_then(|s| s.downcast_ref::<minijinja::Error>());
        }
        let line = err.line();
        match err.kind() {
            ErrorKind::UndefinedError => TemplateError::MissingVariable {
                part,
                name: undefined_name(err.detail())
                    .or_else(|| self.first_missing(part, vars))
                    .unwrap_or_else(|| "(unknown)".to_owned()),
                line,
            },
            ErrorKind::TemplateNotFound => TemplateError::Render {
                part,
                line,
                message: "templates cannot include, extend or import other templates \
                          ({% include %}, {% extends %}, {% import %} and {% from %} are not available)"
                    .to_owned(),
            },
            _ => TemplateError::Render {
                part,
                line,
                message: match err.detail() {
                    Some(detail) => format!("{}: {detail}", err.kind()),
                    None => err.kind().to_string(),
                },
            },
        }
    }

    /// Fallback for naming a missing variable: the first one `part` reads that is absent.
    fn first_missing(
        &self,
        part: Part,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<String> {
        let tmpl = self.env.get_template(part.template_name()).ok()?;
        let mut used: Vec<String> = tmpl.undeclared_variables(false).into_iter().collect();
        used.sort();
        let supplied = |name: &str| {
            vars.contains_key(name)
                || (part.is_layout() && name == LAYOUT_CONTENT_VARIABLE)
                || self.env.globals().any(|(g, _)| g == name)
        };
        used.into_iter().find(|name| !supplied(name))
    }
}

/// An Environment with no loader, no way to reach other templates, strict undefined
/// behaviour, fuel and a recursion limit, HTML escaping for names ending in `.html`.
fn sandboxed_environment(limits: &Limits) -> Environment<'static> {
    let mut env = Environment::new();
    // `debug()` would dump the engine's internal state into the output.
    env.remove_global("debug");
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(limits.fuel));
    env.set_recursion_limit(limits.recursion_limit);
    // Debug mode makes undefined-value errors name the expression (`name` is undefined);
    // its other costs only apply when an error happens.
    env.set_debug(true);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    // Every include/extends/import target becomes a name no template has (there is no
    // loader), so those tags fail with TemplateNotFound, even for the sibling parts.
    env.set_path_join_callback(|name, _parent| Cow::Owned(format!("\u{0}forbidden:{name}")));
    env
}

fn syntax_error(part: Part, source: &str, err: &minijinja::Error) -> TemplateError {
    let column = err.range().map(|range| column_of(source, range.start));
    let line = err
        .line()
        .or_else(|| err.range().map(|range| line_of(source, range.start)));
    TemplateError::Syntax {
        part,
        line,
        column,
        message: err
            .detail()
            .map(str::to_owned)
            .unwrap_or_else(|| err.kind().to_string()),
    }
}

/// 1-based column (in characters) of a byte offset.
fn column_of(source: &str, offset: usize) -> usize {
    let offset = floor_char_boundary(source, offset);
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    source[line_start..offset].chars().count() + 1
}

/// 1-based line of a byte offset.
fn line_of(source: &str, offset: usize) -> usize {
    let offset = floor_char_boundary(source, offset);
    source[..offset].matches('\n').count() + 1
}

fn floor_char_boundary(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Extracts `foo.bar` from minijinja details such as "`foo.bar` is undefined" or
/// "... (`foo` is undefined, from line 3)".
fn undefined_name(detail: Option<&str>) -> Option<String> {
    let detail = detail?;
    let end = detail.find("` is undefined")?;
    let start = detail[..end].rfind('`')? + 1;
    let name = &detail[start..end];
    (!name.is_empty()).then(|| name.to_owned())
}

/// A writer that refuses the write that would take the output past `limit` bytes; minijinja
/// turns the refused write into an error and stops rendering at once.
struct CappedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl CappedWriter {
    fn new(limit: usize) -> Self {
        CappedWriter {
            buf: Vec::new(),
            limit,
            overflowed: false,
        }
    }

    fn into_string(self) -> String {
        // minijinja only writes whole `str`s, so this is always valid UTF-8.
        match String::from_utf8(self.buf) {
            Ok(s) => s,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }
    }
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("template output size limit reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A version for [`TemplateCache`] computed from the sources themselves (template and
/// layout), so a cached entry can never be stale whatever changed (the template, or the
/// layout it uses). Stable within one process only (not to be stored).
pub fn source_version(parts: &TemplateParts, layout: Option<&TemplateParts>) -> u64 {
    let mut hasher = DefaultHasher::new();
    parts.hash(&mut hasher);
    layout.hash(&mut hasher);
    hasher.finish()
}

/// Compiled templates keyed by template id, each with the version it was compiled from
/// (an `updated_at` as a number, or [`source_version`]). A lookup with another version is a
/// miss, so an edited template is recompiled even without [`invalidate`](Self::invalidate).
/// Bounded (least recently used entries are evicted).
pub struct TemplateCache {
    inner: moka::sync::Cache<String, (u64, Arc<CompiledTemplate>)>,
}

impl TemplateCache {
    /// A cache holding at most `max_entries` compiled templates.
    pub fn new(max_entries: u64) -> Self {
        TemplateCache {
            inner: moka::sync::Cache::new(max_entries),
        }
    }

    /// The compiled template for `id` if it was compiled from `version`.
    pub fn get(&self, id: &str, version: u64) -> Option<Arc<CompiledTemplate>> {
        match self.inner.get(id) {
            Some((v, compiled)) if v == version => Some(compiled),
            _ => None,
        }
    }

    /// Stores a compiled template (replacing any other version of `id`).
    pub fn insert(&self, id: &str, version: u64, compiled: Arc<CompiledTemplate>) {
        self.inner.insert(id.to_owned(), (version, compiled));
    }

    /// The cached template for (`id`, `version`), or `compile()`s and caches it. Errors are
    /// not cached. Two threads missing at once may both compile; the result is the same.
    pub fn get_or_compile<F>(
        &self,
        id: &str,
        version: u64,
        compile: F,
    ) -> Result<Arc<CompiledTemplate>, TemplateError>
    where
        F: FnOnce() -> Result<CompiledTemplate, TemplateError>,
    {
        if let Some(hit) = self.get(id, version) {
            return Ok(hit);
        }
        let compiled = Arc::new(compile()?);
        self.insert(id, version, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Drops `id` (call on update and delete of a template; also for the templates that use
    /// a layout when that layout changes, unless the version covers the layout).
    pub fn invalidate(&self, id: &str) {
        self.inner.invalidate(id);
    }

    /// Drops everything.
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }
}

impl Default for TemplateCache {
    fn default() -> Self {
        TemplateCache::new(1_000)
    }
}

impl fmt::Debug for TemplateCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateCache")
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(map) => map,
            _ => panic!("variables must be an object"),
        }
    }

    fn parts(subject: Option<&str>, html: Option<&str>, text: Option<&str>) -> TemplateParts {
        TemplateParts {
            subject: subject.map(str::to_owned),
            html: html.map(str::to_owned),
            text: text.map(str::to_owned),
        }
    }

    fn html_only(html: &str) -> TemplateParts {
        parts(None, Some(html), None)
    }

    fn render_html(html: &str, v: serde_json::Value) -> Result<String, TemplateError> {
        let t = CompiledTemplate::compile(&html_only(html), None)?;
        Ok(t.render(&vars(v))?.html.expect("html part"))
    }

    #[test]
    fn compiled_template_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CompiledTemplate>();
        assert_send_sync::<Arc<CompiledTemplate>>();
        assert_send_sync::<TemplateCache>();
    }

    #[test]
    fn html_is_escaped_text_and_subject_are_not() {
        let t = CompiledTemplate::compile(
            &parts(
                Some("Hi {{ x }}"),
                Some("<p>{{ x }}</p>"),
                Some("Text {{ x }}"),
            ),
            None,
        )
        .unwrap();
        let out = t
            .render(&vars(json!({"x": "<script>alert('a&b')</script>"})))
            .unwrap();
        assert_eq!(
            out.subject.as_deref(),
            Some("Hi <script>alert('a&b')</script>")
        );
        assert_eq!(
            out.text.as_deref(),
            Some("Text <script>alert('a&b')</script>")
        );
        let html = out.html.unwrap();
        assert!(html.starts_with("<p>&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&amp;"), "{html}");
        // |safe opts out in html.
        assert_eq!(
            render_html("{{ x|safe }}", json!({"x": "<b>b</b>"})).unwrap(),
            "<b>b</b>"
        );
    }

    #[test]
    fn absent_parts_stay_absent() {
        let t = CompiledTemplate::compile(&parts(None, None, Some("t")), None).unwrap();
        let out = t.render(&serde_json::Map::new()).unwrap();
        assert_eq!(
            out,
            Rendered {
                subject: None,
                html: None,
                text: Some("t".into())
            }
        );
    }

    #[test]
    fn missing_variable_is_named_with_its_part() {
        let t = CompiledTemplate::compile(
            &parts(
                Some("Hello {{ first_name }}"),
                Some("<p>{{ city }}</p>"),
                None,
            ),
            None,
        )
        .unwrap();
        let err = t.render(&vars(json!({"city": "Lyon"}))).unwrap_err();
        assert!(
            matches!(&err, TemplateError::MissingVariable { part: Part::Subject, name, line: Some(1) } if name == "first_name"),
            "{err:?}"
        );
        assert_eq!(err.code(), "template_render_error");
        let msg = err.to_string();
        assert!(
            msg.contains("`first_name`") && msg.contains("subject"),
            "{msg}"
        );

        let err = t.render(&vars(json!({"first_name": "Ana"}))).unwrap_err();
        assert!(
            matches!(&err, TemplateError::MissingVariable { part: Part::Html, name, .. } if name == "city"),
            "{err:?}"
        );

        // In text, in a loop, on line 3.
        let t = CompiledTemplate::compile(
            &parts(
                None,
                None,
                Some("a\nb\n{% for i in items %}{{ i }}{% endfor %}"),
            ),
            None,
        )
        .unwrap();
        let err = t.render(&serde_json::Map::new()).unwrap_err();
        assert!(
            matches!(&err, TemplateError::MissingVariable { part: Part::Text, name, line: Some(3) } if name == "items"),
            "{err:?}"
        );
    }

    #[test]
    fn missing_nested_attribute_is_named() {
        let err = render_html("Hi {{ contact.first_name }}", json!({"contact": {}})).unwrap_err();
        match &err {
            TemplateError::MissingVariable { name, .. } => {
                assert_eq!(name, "contact.first_name", "{err}")
            }
            other => panic!("{other:?}"),
        }
        let err = render_html("Hi {{ contact.first_name }}", json!({})).unwrap_err();
        match &err {
            TemplateError::MissingVariable { name, .. } => assert_eq!(name, "contact", "{err}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn optional_variables_work_under_strict_mode() {
        let empty = json!({});
        assert_eq!(
            render_html(
                "{% if x is defined %}[{{ x }}]{% else %}none{% endif %}",
                empty.clone()
            )
            .unwrap(),
            "none"
        );
        assert_eq!(
            render_html("{% if x is defined %}[{{ x }}]{% endif %}", json!({"x": 1})).unwrap(),
            "[1]"
        );
        assert_eq!(
            render_html("{{ x|default('anon') }}", empty.clone()).unwrap(),
            "anon"
        );
        assert_eq!(
            render_html("{{ x|default('anon') }}", json!({"x": "Ana"})).unwrap(),
            "Ana"
        );
        assert_eq!(
            render_html("{% if x is undefined %}u{% endif %}", empty.clone()).unwrap(),
            "u"
        );
        assert_eq!(
            render_html(
                "{{ contact.first_name|default('there') }}",
                json!({"contact": {}})
            )
            .unwrap(),
            "there"
        );
        // A bare truth test of a missing variable is an error under strict mode.
        let err = render_html("{% if x %}y{% endif %}", empty).unwrap_err();
        assert!(
            matches!(&err, TemplateError::MissingVariable { name, .. } if name == "x"),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_error_has_part_line_and_column() {
        let err = CompiledTemplate::compile(
            &parts(Some("ok"), Some("<p>\n  line two\n  {{ name }</p>"), None),
            None,
        )
        .unwrap_err();
        match &err {
            TemplateError::Syntax {
                part,
                line,
                column,
                message,
            } => {
                assert_eq!(*part, Part::Html);
                assert_eq!(*line, Some(3));
                assert!(column.is_some(), "{err:?}");
                assert!(!message.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.code(), "template_syntax_error");
        let msg = err.to_string();
        assert!(msg.contains("html") && msg.contains("line 3"), "{msg}");

        let err = check_syntax(&parts(None, None, Some("{% for x in y %}no end"))).unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::Syntax {
                    part: Part::Text,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = check_syntax(&parts(Some("{% if %}"), None, None)).unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::Syntax {
                    part: Part::Subject,
                    line: Some(1),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn syntax_error_column_points_at_the_problem() {
        let err = check_syntax(&html_only("ab\ncd {{ 1 + }} ef")).unwrap_err();
        match err {
            TemplateError::Syntax { line, column, .. } => {
                assert_eq!(line, Some(2));
                let column = column.unwrap();
                assert!((4..=14).contains(&column), "column {column}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fuel_limit_stops_endless_loops() {
        let t = CompiledTemplate::compile(
            &html_only(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            ),
            None,
        )
        .unwrap();
        let start = std::time::Instant::now();
        let err = t.render(&serde_json::Map::new()).unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::FuelExhausted {
                    part: Part::Html,
                    fuel: DEFAULT_FUEL
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("work limit"), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn fuel_bounds_captured_output_too() {
        // Captured output never reaches the output writer; fuel still stops it.
        let t = CompiledTemplate::compile(
            &html_only("{% set s %}{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxxxxxxxx{% endfor %}{% endfor %}{% endset %}{{ s|length }}"),
            None,
        )
        .unwrap();
        let err = t.render(&serde_json::Map::new()).unwrap_err();
        assert!(
            matches!(err, TemplateError::FuelExhausted { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn fuel_is_checked_before_building_huge_values() {
        let start = std::time::Instant::now();
        let err =
            render_html("{% set s = 'x' * 1000000000 %}{{ s|length }}", json!({})).unwrap_err();
        assert!(
            matches!(err, TemplateError::FuelExhausted { .. }),
            "{err:?}"
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn debug_function_is_not_available() {
        let err = render_html("{{ debug() }}", json!({})).unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render { message, .. } if message.contains("unknown function")),
            "{err:?}"
        );
    }

    #[test]
    fn recursion_limit_stops_recursive_macros() {
        let t = CompiledTemplate::compile(
            &html_only("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            None,
        )
        .unwrap();
        let err = t.render(&serde_json::Map::new()).unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::RecursionLimit {
                    part: Part::Html,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("recursion limit"), "{err}");
        // Bounded recursion is fine.
        let out = render_html(
            "{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}",
            json!({}),
        )
        .unwrap();
        assert_eq!(out, "54321");
    }

    #[test]
    fn output_cap_stops_huge_output() {
        let t = CompiledTemplate::compile(
            &html_only("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"),
            None,
        )
        .unwrap();
        let err = t.render(&serde_json::Map::new()).unwrap_err();
        assert_eq!(
            err,
            TemplateError::OutputTooLarge {
                part: Part::Html,
                limit_bytes: DEFAULT_MAX_OUTPUT_BYTES
            }
        );
        assert!(err.to_string().contains("output size limit"), "{err}");

        // A small custom cap, in the text part, with one big value.
        let limits = Limits {
            max_output_bytes: 10,
            ..Limits::default()
        };
        let t = CompiledTemplate::compile_with_limits(
            &parts(None, None, Some("{{ s }}")),
            None,
            limits,
        )
        .unwrap();
        assert_eq!(
            t.render(&vars(json!({"s": "0123456789"})))
                .unwrap()
                .text
                .unwrap(),
            "0123456789"
        );
        let err = t.render(&vars(json!({"s": "0123456789A"}))).unwrap_err();
        assert_eq!(
            err,
            TemplateError::OutputTooLarge {
                part: Part::Text,
                limit_bytes: 10
            }
        );
    }

    #[test]
    fn source_size_is_capped() {
        let limits = Limits {
            max_source_bytes: 8,
            ..Limits::default()
        };
        let err = CompiledTemplate::compile_with_limits(
            &parts(Some("123456789"), None, None),
            None,
            limits,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::SourceTooLarge {
                    part: Part::Subject,
                    size_bytes: 9,
                    limit_bytes: 8
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.code(), "template_syntax_error");
    }

    #[test]
    fn include_extends_import_are_refused() {
        // Every sibling part name and a file path: none can be loaded.
        for src in [
            "{% include 'body.txt' %}",
            "{% include 'subject.txt' %}",
            "{% include 'layout.html' %}",
            "{% include '/etc/passwd' %}",
            "{% extends 'base.html' %}",
            "{% import 'macros.html' as m %}{{ m.x() }}",
            "{% from 'macros.html' import x %}{{ x() }}",
        ] {
            let t =
                CompiledTemplate::compile(&parts(Some("s"), Some(src), Some("t")), None).unwrap();
            let err = t.render(&serde_json::Map::new()).unwrap_err();
            match &err {
                TemplateError::Render {
                    part: Part::Html,
                    message,
                    ..
                } => {
                    assert!(message.contains("cannot include"), "{src}: {message}")
                }
                other => panic!("{src}: {other:?}"),
            }
        }
        assert_eq!(
            render_html("a{% include 'x' ignore missing %}b", json!({})).unwrap(),
            "ab"
        );
    }

    #[test]
    fn layout_wraps_html_and_text() {
        let layout = parts(
            Some("layout subject is ignored"),
            Some("<html><body>{{ content }}<footer>{{ company }}</footer></body></html>"),
            Some("{{ content }}\n--\n{{ company }}"),
        );
        let child = parts(
            Some("Hi {{ name }}"),
            Some("<p>Hello {{ name }}</p>"),
            Some("Hello {{ name }}"),
        );
        let t = CompiledTemplate::compile(&child, Some(&layout)).unwrap();
        let out = t
            .render(&vars(json!({"name": "<Ana & Bob>", "company": "A&B"})))
            .unwrap();
        assert_eq!(out.subject.as_deref(), Some("Hi <Ana & Bob>"));
        assert_eq!(
            out.html.as_deref(),
            Some(
                "<html><body><p>Hello &lt;Ana &amp; Bob&gt;</p><footer>A&amp;B</footer></body></html>"
            )
        );
        assert_eq!(out.text.as_deref(), Some("Hello <Ana & Bob>\n--\nA&B"));
        assert_eq!(t.variables(), vec!["company", "name"]);
    }

    #[test]
    fn layout_content_overrides_a_caller_content_variable_only_in_the_layout() {
        let layout = parts(None, Some("[{{ content }}]"), None);
        let child = html_only("{{ content }}");
        let t = CompiledTemplate::compile(&child, Some(&layout)).unwrap();
        let out = t.render(&vars(json!({"content": "<i>"}))).unwrap();
        assert_eq!(out.html.as_deref(), Some("[&lt;i&gt;]"));
        // The child's own use of `content` is a variable like any other.
        assert_eq!(t.variables(), vec!["content"]);
    }

    #[test]
    fn layout_without_content_is_rejected() {
        let layout = parts(None, Some("<html>no slot</html>"), Some("{{ content }}"));
        let err = CompiledTemplate::compile(&html_only("<p>x</p>"), Some(&layout)).unwrap_err();
        assert_eq!(
            err,
            TemplateError::LayoutWithoutContent {
                part: Part::LayoutHtml
            }
        );
        assert!(err.to_string().contains("{{ content }}"), "{err}");
        assert_eq!(err.code(), "template_syntax_error");
        // A layout part the template does not have is not used, so it is not checked.
        let t = CompiledTemplate::compile(&parts(None, None, Some("body")), Some(&layout)).unwrap();
        let out = t.render(&serde_json::Map::new()).unwrap();
        assert_eq!(out.html, None);
        assert_eq!(out.text.as_deref(), Some("body"));
        // A layout without an html part leaves the html unwrapped.
        let t = CompiledTemplate::compile(
            &html_only("<b>x</b>"),
            Some(&parts(None, None, Some("{{ content }}"))),
        )
        .unwrap();
        assert_eq!(
            t.render(&serde_json::Map::new()).unwrap().html.as_deref(),
            Some("<b>x</b>")
        );
    }

    #[test]
    fn layout_errors_name_the_layout_part() {
        let layout = parts(None, Some("{{ content }}{{ footer }}"), None);
        let t = CompiledTemplate::compile(&html_only("x"), Some(&layout)).unwrap();
        let err = t.render(&serde_json::Map::new()).unwrap_err();
        assert!(
            matches!(&err, TemplateError::MissingVariable { part: Part::LayoutHtml, name, .. } if name == "footer"),
            "{err:?}"
        );
        assert!(err.to_string().contains("layout html"), "{err}");
        let err = CompiledTemplate::compile(
            &html_only("x"),
            Some(&parts(None, Some("{{ content }"), None)),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                TemplateError::Syntax {
                    part: Part::LayoutHtml,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn variables_are_listed_sorted_and_deduplicated() {
        let t = CompiledTemplate::compile(
            &parts(
                Some("{{ order.id }} for {{ name }}"),
                Some("{% set greeting = 'Hi' %}{{ greeting }} {{ name|upper }}{% for item in items %}{{ item.title }}{{ loop.index }}{% endfor %}{% if coupon is defined %}{{ coupon }}{% endif %}{{ unsubscribe_url }}"),
                Some("{% for i in range(3) %}{{ i }}{% endfor %}{{ ns }}{% set n = namespace(a=1) %}{{ n.a }}"),
            ),
            None,
        )
        .unwrap();
        assert_eq!(
            t.variables(),
            vec!["coupon", "items", "name", "ns", "order", "unsubscribe_url"]
        );
        assert_eq!(
            check_syntax(&parts(Some("{{ b }}{{ a }}{{ b }}"), None, None)).unwrap(),
            vec!["a", "b"]
        );
        assert!(check_syntax(&TemplateParts::default()).unwrap().is_empty());
    }

    #[test]
    fn filters_loops_conditionals_and_nested_data() {
        let t = CompiledTemplate::compile(
            &parts(
                Some("{{ contact.first_name|upper }}, your order"),
                Some("<ul>{% for item in order.items %}<li>{{ loop.index }}. {{ item.name|title }} x{{ item.qty }}{% if item.qty > 1 %}s{% endif %}</li>{% endfor %}</ul>{% if order.items|length == 0 %}empty{% else %}{{ order.items|length }} items{% endif %}"),
                Some("Hi {{ contact.first_name }} {{ contact.last_name|default('') }}!{% for k, v in contact.tags|dictsort %} {{ k }}={{ v }}{% endfor %}"),
            ),
            None,
        )
        .unwrap();
        let out = t
            .render(&vars(json!({
                "contact": {"first_name": "ana", "tags": {"b": 2, "a": 1}},
                "order": {"items": [{"name": "red shoe", "qty": 2}, {"name": "hat", "qty": 1}]}
            })))
            .unwrap();
        assert_eq!(out.subject.as_deref(), Some("ANA, your order"));
        assert_eq!(
            out.html.as_deref(),
            Some("<ul><li>1. Red Shoe x2s</li><li>2. Hat x1</li></ul>2 items")
        );
        assert_eq!(out.text.as_deref(), Some("Hi ana ! a=1 b=2"));
    }

    #[test]
    fn other_render_errors_are_reported() {
        let err = render_html("line1\n{{ x|no_such_filter }}", json!({"x": 1})).unwrap_err();
        match &err {
            TemplateError::Render {
                part: Part::Html,
                line: Some(2),
                message,
            } => {
                assert!(message.contains("filter"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(err.code(), "template_render_error");
        let err = render_html("{{ a + b }}", json!({"a": 1, "b": "x"})).unwrap_err();
        assert!(matches!(err, TemplateError::Render { .. }), "{err:?}");
    }

    #[test]
    fn one_compiled_template_renders_a_thousand_times() {
        let t = Arc::new(
            CompiledTemplate::compile(
                &parts(
                    Some("Hi {{ n }}"),
                    Some("<p>{{ n }} {{ who }}</p>"),
                    Some("{{ n }}"),
                ),
                Some(&parts(None, Some("<div>{{ content }}</div>"), None)),
            )
            .unwrap(),
        );
        for i in 0..1_000 {
            let out = t
                .render(&vars(json!({"n": i, "who": format!("<{i}>")})))
                .unwrap();
            assert_eq!(out.subject, Some(format!("Hi {i}")));
            assert_eq!(out.html, Some(format!("<div><p>{i} &lt;{i}&gt;</p></div>")));
            assert_eq!(out.text, Some(i.to_string()));
        }
        // And from several threads at once.
        let handles: Vec<_> = (0..4)
            .map(|k| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let out = t
                            .render(&vars(json!({"n": k * 1000 + i, "who": "x"})))
                            .unwrap();
                        assert_eq!(out.text, Some((k * 1000 + i).to_string()));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn cache_is_keyed_by_id_and_version() {
        let cache = TemplateCache::new(100);
        let p1 = html_only("v1 {{ x }}");
        let v1 = source_version(&p1, None);
        let mut compiles = 0;
        let a = cache
            .get_or_compile("tpl_1", v1, || {
                compiles += 1;
                CompiledTemplate::compile(&p1, None)
            })
            .unwrap();
        let b = cache
            .get_or_compile("tpl_1", v1, || {
                compiles += 1;
                CompiledTemplate::compile(&p1, None)
            })
            .unwrap();
        assert_eq!(compiles, 1);
        assert!(Arc::ptr_eq(&a, &b));

        // A new version is a miss.
        let p2 = html_only("v2 {{ x }}");
        let v2 = source_version(&p2, None);
        assert_ne!(v1, v2);
        assert!(cache.get("tpl_1", v2).is_none());
        let c = cache
            .get_or_compile("tpl_1", v2, || CompiledTemplate::compile(&p2, None))
            .unwrap();
        assert_eq!(
            c.render(&vars(json!({"x": 1}))).unwrap().html.as_deref(),
            Some("v2 1")
        );
        // A layout change changes the source version.
        let layout = parts(None, Some("[{{ content }}]"), None);
        assert_ne!(source_version(&p2, Some(&layout)), v2);

        cache.invalidate("tpl_1");
        assert!(cache.get("tpl_1", v2).is_none());

        // Errors are not cached.
        let bad = html_only("{{");
        assert!(
            cache
                .get_or_compile("tpl_2", 1, || CompiledTemplate::compile(&bad, None))
                .is_err()
        );
        assert!(cache.get("tpl_2", 1).is_none());
    }
}
