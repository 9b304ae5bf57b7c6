//! `ApiJson<T>`: the JSON body extractor of the API. It checks the content type (415), the
//! size (413, from `server.max_body_bytes`), the syntax (400 `invalid_json`) and the shape
//! (422 `validation_error` naming the field, for unknown fields and wrong types). It keeps the
//! raw bytes, which idempotency hashes.

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::error::ApiError;

/// A parsed JSON body and the bytes it came from.
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T> std::ops::Deref for ApiJson<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Checks the `Content-Type`: JSON (`application/json`, `*/*+json`) or absent.
pub fn check_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(actix_web::http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "The body must be JSON: send 'Content-Type: application/json' (got '{}').",
                value.to_str().unwrap_or("?")
            ),
        ))
    }
}

/// Parses `bytes` as `T`, mapping serde's errors to the API's envelope.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::invalid_json(
            "The request body is empty; send a JSON document.",
        ));
    }
    deserialize(|| serde_json::Deserializer::from_slice(bytes)).map_err(|e| {
        // serde stops at the first wrong type, before it reaches a syntax error further on
        // (`[1, 2` is a type error at `[0]` for a struct): broken JSON is a 400, whatever
        // its shape. Only the error path pays for this second look.
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Err(syntax) if !syntax.is_data() => ApiError::invalid_json(format!(
                "The request body is not valid JSON: {}. Check quotes, commas and brackets.",
                strip_position(&syntax.to_string())
            )),
            _ => describe(e),
        }
    })
}

/// Parses one item of a JSON array already checked for syntax (batch items), with the same
/// errors as [`parse`]. Items kept as raw text are parsed once, straight into `T`; decoded
/// into `serde_json::Value`s first, they were built twice (a quarter of preparing a batch).
pub fn parse_item<T: DeserializeOwned>(item: &RawValue) -> Result<T, ApiError> {
    deserialize(|| serde_json::Deserializer::from_str(item.get())).map_err(describe)
}

/// Deserializes `T` from the deserializer `make` gives, with the path of a wrong field in
/// the error. Path tracking costs on every value parsed and only an error needs it, so the
/// input is parsed plainly first and again with tracking only when that fails.
fn deserialize<'de, T, R>(
    make: impl Fn() -> serde_json::Deserializer<R>,
) -> Result<T, serde_path_to_error::Error<serde_json::Error>>
where
    T: serde::Deserialize<'de>,
    R: serde_json::de::Read<'de>,
{
    if let Ok(value) = T::deserialize(ObjectBody(&mut make())) {
        return Ok(value);
    }
    serde_path_to_error::deserialize(ObjectBody(&mut make()))
}

/// A JSON deserializer for a whole body whose struct must come as an object. serde's
/// derived structs also take an array of their fields in declaration order, so a body
/// like `["a@b.c", ...]` would be read field by field into a send request; here a struct
/// reads a map only, and an array is a wrong type. Everything else goes to the wrapped
/// deserializer unchanged (`Vec`s and `Value`s still take arrays).
struct ObjectBody<D>(D);

/// Passes `deserialize_*` methods through to the wrapped deserializer.
macro_rules! pass_through {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {$(
        fn $method<V: serde::de::Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method($($arg,)* visitor)
        }
    )*};
}

impl<'de, D: serde::Deserializer<'de>> serde::Deserializer<'de> for ObjectBody<D> {
    type Error = D::Error;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(visitor)
    }

    pass_through!(
        deserialize_any(),
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_i128(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str),
        deserialize_seq(),
        deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize),
        deserialize_map(),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

fn describe(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    match inner.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            ApiError::invalid_json(format!(
                "The request body is not valid JSON: {inner}. Check quotes, commas and brackets."
            ))
        }
        serde_json::error::Category::Io => {
            ApiError::invalid_json("The request body could not be read.")
        }
        serde_json::error::Category::Data => {
            let text = strip_position(&inner.to_string());
            // serde reports an unknown field at its parent; name the field itself.
            if let Some(field) = between(&text, "unknown field `", "`") {
                let field_path = join_path(&path, field);
                let allowed = allowed_here(&text).unwrap_or_default();
                return ApiError::validation(format!("Unknown field '{field_path}'.{allowed}"))
                    .with_field(field_path);
            }
            if let Some(field) = between(&text, "missing field `", "`") {
                let field_path = join_path(&path, field);
                return ApiError::validation(format!("The field '{field_path}' is required."))
                    .with_field(field_path);
            }
            let root = path == "." || path.is_empty();
            let shown = if root {
                "The request body".to_string()
            } else {
                format!("The field '{path}'")
            };
            let message = if text.starts_with("invalid type: sequence, expected struct") {
                format!("{shown} must be a JSON object with named fields, not an array.")
            } else {
                format!(
                    "{shown} has the wrong type or value: {}.",
                    text.replace('`', "'")
                )
            };
            let mut e = ApiError::validation(message);
            if !root {
                e = e.with_field(path);
            }
            e
        }
    }
}

fn join_path(parent: &str, field: &str) -> String {
    if parent.is_empty() || parent == "." {
        field.to_string()
    } else if parent.ends_with(field) {
        parent.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// " Allowed here: 'a', 'b'." from serde's "unknown field `x`, expected `a` or `b`", when it
/// lists what is expected.
pub(crate) fn allowed_here(text: &str) -> Option<String> {
    text.split_once("expected ")
        .map(|(_, rest)| format!(" Allowed here: {}.", rest.replace('`', "'")))
}

/// The text of `s` between the first `start` and the next `end` (serde's messages quote
/// names between backticks).
pub(crate) fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// serde_json appends " at line 1 column 20"; the field path says more to a client.
fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// Bodies from this size on are parsed on a blocking thread: a batch of 1,000 emails is
/// megabytes of JSON, milliseconds of parsing that would stall every other request of the
/// async worker.
const PARSE_OFF_THREAD_BYTES: usize = 64 * 1024;

impl<T: DeserializeOwned + Send + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let checked = check_content_type(req);
        let body = Bytes::from_request(req, payload);
        Box::pin(async move {
            checked?;
            let raw = body.await.map_err(payload_error)?;
            let value = if raw.len() >= PARSE_OFF_THREAD_BYTES {
                crate::ops::memory::large_body_received();
                let bytes = raw.clone();
                super::blocking(move || parse(&bytes)).await??
            } else {
                parse(&raw)?
            };
            Ok(ApiJson { value, raw })
        })
    }
}

/// Maps a failure to read the body to 413 or 400.
pub fn payload_error(err: actix_web::Error) -> ApiError {
    let status = err.as_response_error().status_code();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The request body is larger than the server accepts (server.max_body_bytes). Send less data per request.",
        )
    } else {
        ApiError::invalid_json(format!("The request body could not be read: {err}."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        content: String,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        subject: Option<String>,
        attachments: Option<Vec<Inner>>,
    }

    #[test]
    fn errors_name_fields() {
        let e = parse::<Outer>(br#"{"subjekt": "x"}"#).unwrap_err();
        assert_eq!(e.code, "validation_error");
        assert_eq!(e.field.as_deref(), Some("subjekt"));
        let e = parse::<Outer>(br#"{"subject": 5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subject"));
        let e = parse::<Outer>(br#"{"attachments": [{"content": 1}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("attachments[0].content"));
        let e = parse::<Outer>(br#"{"attachments": [{"contnt": "a"}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("attachments[0].contnt"));
        let e = parse::<Outer>(b"{nope").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = parse::<Outer>(b"").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        // Broken JSON is a 400 even where its first value already has the wrong type.
        let e = parse::<Outer>(b"[1, 2").unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = parse::<Outer>(br#"{"subject": 5,"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
    }
}
