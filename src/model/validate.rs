//! Field errors, a collector for them, and JSON parsing that names the failing path.
//!
//! Every validation in this module reports *all* failing fields at once, each named by its
//! JSON path (`lifecycle.retryPolicy.maxAttempts`, `target[1].config.url`), so that a 400
//! answer can list them all in its `details`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The JSON path of the field, e.g. `lifecycle.retryPolicy.maxAttempts` or
    /// `target[1].config.url`. Empty when the body as a whole is not valid JSON.
    #[schema(example = "lifecycle.retryPolicy.maxAttempts")]
    pub field: String,
    /// What is wrong with it.
    #[schema(example = "must be between 0 and 10, got 12")]
    pub message: String,
}

impl FieldError {
    /// A new field error.
    #[must_use]
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Collects [`FieldError`]s while a value is checked, so every failing field is reported.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// An empty collector.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is invalid.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// Records several errors.
    pub fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.0.extend(errors);
    }

    /// Whether nothing has been recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors recorded so far.
    #[must_use]
    pub fn as_slice(&self) -> &[FieldError] {
        &self.0
    }

    /// `Ok(value)` when nothing was recorded, else every recorded error.
    pub fn into_result<T>(self, value: T) -> Result<T, Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self.0)
        }
    }

    /// Every recorded error.
    #[must_use]
    pub fn into_vec(self) -> Vec<FieldError> {
        self.0
    }

    /// Checks `lo <= value <= hi`.
    pub fn range<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        field: impl Into<String>,
        value: T,
        lo: T,
        hi: T,
    ) {
        if value < lo || value > hi {
            self.push(field, format!("must be between {lo} and {hi}, got {value}"));
        }
    }

    /// Checks that `value` has `lo..=hi` characters (Unicode scalar values, not bytes).
    pub fn chars(&mut self, field: impl Into<String>, value: &str, lo: usize, hi: usize) {
        let n = value.chars().count();
        if n < lo || n > hi {
            let what = if n == 0 {
                "must not be empty".to_owned()
            } else {
                format!("has {n} characters")
            };
            self.push(field, format!("{what}; allowed: {lo} to {hi} characters"));
        }
    }
}

/// How deeply a value a write stores (`payload`, `target`) may nest: at most 64 levels of
/// objects and arrays, the value itself counted (`{"a": [1]}` is 2 levels).
///
/// Kept well below what reading it back takes, so that anything a write accepts decodes
/// again: serde_json parses at most 127 levels, and a stored value sits at most 3 levels
/// deeper than the write's own (the record's object, the list a `target` is stored as, a
/// dead-letter entry around the record); the record decode also parses a stored `target`
/// on its own ([`crate::message::StoredMessage`]), and a delivery target parses the payload
/// from its root.
pub const MAX_JSON_DEPTH: usize = 64;

/// Levels of objects and arrays in `v` (a scalar is 0), without recursion.
#[must_use]
pub fn value_depth(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, above)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(above + 1);
                stack.extend(a.iter().map(|x| (x, above + 1)));
            }
            Value::Object(m) => {
                deepest = deepest.max(above + 1);
                stack.extend(m.values().map(|x| (x, above + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Levels of objects and arrays in `json`, text the parser already accepted (a byte scan,
/// no second parse; brackets inside strings do not count).
#[must_use]
pub fn text_depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The refusal of a value nested `depth` levels deep, beyond [`MAX_JSON_DEPTH`].
#[must_use]
pub fn check_depth(depth: usize) -> Result<(), String> {
    if depth > MAX_JSON_DEPTH {
        Err(format!(
            "is nested {depth} levels deep; at most {MAX_JSON_DEPTH} levels of objects and arrays"
        ))
    } else {
        Ok(())
    }
}

/// `prefix.field`, or `field` when `prefix` is empty.
#[must_use]
pub fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// `prefix[index]`.
#[must_use]
pub fn index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

/// Parses a JSON body into `T`, naming the failing path on error.
///
/// - A type error, an out-of-range integer or an unknown field gives one error whose `field`
///   is the JSON path (`priority`, `lifecycle.foo`) and whose `message` is serde's, without
///   the position (e.g. `invalid type: string "high", expected u8`). A missing field is named
///   by its own path (`namespace`, `target.config`).
/// - Malformed JSON (syntax error, truncated body, trailing characters) gives one error with
///   an empty `field` and a message that includes the line and column.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Vec<FieldError>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        vec![json_error(&path, e.inner())]
    })?;
    de.end().map_err(|e| vec![json_error("", &e)])?;
    Ok(value)
}

/// Deserializes `T` from an already parsed JSON value; paths are relative to `prefix`.
pub fn from_value<T: DeserializeOwned>(
    value: &serde_json::Value,
    prefix: &str,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            prefix.to_owned()
        } else {
            join(prefix, &path)
        };
        json_error(&path, e.inner())
    })
}

/// Deserializes `T` from a JSON object; paths are relative to `prefix`.
pub fn from_map<T: DeserializeOwned>(
    map: &serde_json::Map<String, serde_json::Value>,
    prefix: &str,
) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(map).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            prefix.to_owned()
        } else {
            join(prefix, &path)
        };
        json_error(&path, e.inner())
    })
}

fn json_error(path: &str, e: &serde_json::Error) -> FieldError {
    use serde_json::error::Category;
    let full = e.to_string();
    match e.classify() {
        Category::Data => {
            // serde_json appends " at line L column C" when it knows the position.
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
            let path = if path == "." || path == "?" { "" } else { path };
            // "missing field `x`" is raised by the parent object: name the field itself.
            let field = match message
                .strip_prefix("missing field `")
                .and_then(|r| r.strip_suffix('`'))
            {
                Some(name) => join(path, name),
                None => path.to_owned(),
            };
            FieldError::new(field, message)
        }
        Category::Syntax | Category::Eof | Category::Io => {
            FieldError::new("", format!("malformed JSON: {full}"))
        }
    }
}
