//! Redaction: the secrets an operator configured never leave the service in clear.
//!
//! Every JSON the API serves that embeds a target or a mirror's backend configuration (a
//! namespace, a message read back, a dead-letter entry) goes through this module first, and so
//! does free text that may quote a URL (mirror errors). A secret value is replaced by the
//! string [`SET`] (`"<set>"`); an absent or `null` secret stays absent, so whether one is set
//! stays visible.
//!
//! What counts as a secret, in a target's `config` and in a `backendConfig` (at any depth):
//!
//! - a field whose name says so ([`is_secret_field`]): `secret`, `secrets` (every element),
//!   `password`, `token`, `apiKey`, `accessKeyId`, `secretAccessKey`, `credentials`, ...;
//! - under `headers`, the value of every header whose name says so ([`is_secret_header`]):
//!   `Authorization`, `Cookie`, `X-API-Key`, `X-Signature`, ...;
//! - in every other string, the userinfo of a URL (`redis://user:pass@host` →
//!   `redis://<set>@host`) and the value of a secret-looking `name=value` pair, as in a query
//!   string (`?token=…`) or a connection string (`password=…`) ([`text`]).
//!
//! [`restore_namespace`] is the way back: a namespace document sent back with [`SET`] where a
//! secret was keeps the stored secret, so that an admin can GET, edit and PUT a namespace
//! without typing its secrets again.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::model::validate::FieldError;

/// What a secret's value is replaced by.
pub const SET: &str = "<set>";

/// Lower-cased ASCII letters and digits of `name` (`X-API-Key` → `xapikey`).
fn squash(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// True when a request header's value is a credential: its name contains `auth`
/// (`Authorization`, `Proxy-Authorization`, `X-Auth`), `cookie`, `token`, `key`, `secret`,
/// `signature`, `password`, `credential` or `session` (case-insensitive).
#[must_use]
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "auth",
        "cookie",
        "token",
        "key",
        "secret",
        "signature",
        "password",
        "passwd",
        "credential",
        "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// True when a configuration field holds a secret: its name (case, `_`, `-` and `.`
/// ignored) contains `password`, `passwd`, `passphrase`, `secret`, `token`, `credential`,
/// `apikey`, `accesskey`, `privatekey`, `signingkey`, `authorization` or `cookie`, or is
/// `pass`, `pwd` or `auth`.
#[must_use]
pub fn is_secret_field(name: &str) -> bool {
    let n = squash(name);
    [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "credential",
        "apikey",
        "accesskey",
        "privatekey",
        "signingkey",
        "authorization",
        "cookie",
    ]
    .iter()
    .any(|w| n.contains(w))
        || matches!(n.as_str(), "pass" | "pwd" | "auth")
}

/// True when the value of `name=value` in a query or connection string is a secret: a
/// secret field ([`is_secret_field`]), or `key`, `sig`, `signature`, `session`, `auth…`.
fn is_secret_param(name: &str) -> bool {
    let n = squash(name);
    is_secret_field(name)
        || matches!(n.as_str(), "key" | "sig" | "code")
        || [
            "signature",
            "session",
            "auth",
            "xamzcredential",
            "xamzsecuritytoken",
        ]
        .iter()
        .any(|w| n.contains(w))
}

/// Replaces every non-null leaf of a secret field's value by [`SET`] (a list keeps its
/// length, an object its keys: what is set stays visible).
fn mask(v: &mut Value) {
    match v {
        Value::Null => {}
        Value::Array(a) => a.iter_mut().for_each(mask),
        Value::Object(m) => m.values_mut().for_each(mask),
        _ => *v = Value::String(SET.to_owned()),
    }
}

/// Redacts a target's `config` or a mirror's `backendConfig` (see the module's rules).
pub fn config(map: &mut Map<String, Value>) {
    for (k, v) in map.iter_mut() {
        if is_secret_field(k) {
            mask(v);
        } else if k.eq_ignore_ascii_case("headers") {
            headers(v);
        } else {
            walk(v);
        }
    }
}

/// Redacts a `headers` value: a map of name to value, or a list of `{name, value}`.
fn headers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (name, value) in m.iter_mut() {
                if is_secret_header(name) {
                    mask(value);
                } else {
                    walk(value);
                }
            }
        }
        Value::Array(list) => {
            for h in list {
                let secret = h
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(is_secret_header);
                match h {
                    Value::Object(m) if secret => {
                        if let Some(value) = m.get_mut("value") {
                            mask(value);
                        }
                    }
                    other => walk(other),
                }
            }
        }
        other => walk(other),
    }
}

/// Redacts any value inside a configuration: objects by the field rules, strings by [`text`].
fn walk(v: &mut Value) {
    match v {
        Value::Object(m) => config(m),
        Value::Array(a) => a.iter_mut().for_each(walk),
        Value::String(s) => {
            if let Cow::Owned(clean) = text(s) {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// Redacts one target (`{type, identifier, config, ...}`: its `config`), a list of them, or
/// leaves an identifier (a string) as it is. Anything else is redacted as configuration.
pub fn targets(v: &mut Value) {
    match v {
        Value::Array(list) => list.iter_mut().for_each(targets),
        Value::Object(t) => match t.get_mut("config") {
            Some(Value::Object(c)) => config(c),
            Some(other) => walk(other),
            None => config(t),
        },
        _ => {}
    }
}

/// [`targets`], by value.
#[must_use]
pub fn targets_owned(mut v: Value) -> Value {
    targets(&mut v);
    v
}

/// Redacts a namespace document: every `targetConfigs[].config`, its `backendConfig` and
/// every `mirrors[].backendConfig`.
pub fn namespace(v: &mut Value) {
    let Value::Object(ns) = v else { return };
    if let Some(t) = ns.get_mut("targetConfigs") {
        targets(t);
    }
    if let Some(Value::Object(c)) = ns.get_mut("backendConfig") {
        config(c);
    }
    if let Some(Value::Array(mirrors)) = ns.get_mut("mirrors") {
        for m in mirrors {
            if let Some(Value::Object(c)) = m.get_mut("backendConfig") {
                config(c);
            }
        }
    }
}

/// A namespace as served: serialised, then redacted ([`namespace`]).
///
/// # Errors
/// The namespace cannot be serialised (not expected).
pub fn namespace_json<T: serde::Serialize>(ns: &T) -> Result<Value, serde_json::Error> {
    let mut v = serde_json::to_value(ns)?;
    namespace(&mut v);
    Ok(v)
}

/// Scrubs credentials from free text or a URL: the userinfo of every `scheme://user:pass@`
/// becomes `scheme://<set>@`, and the value of every secret-looking `name=value` pair (a
/// query's `token=…`, `sig=…`, `api_key=…`; a connection string's `password=…`) becomes
/// [`SET`]. Text without either comes back borrowed.
#[must_use]
pub fn text(s: &str) -> Cow<'_, str> {
    let a = userinfo(s);
    let changed = match pairs(&a) {
        Cow::Owned(b) => Some(b),
        Cow::Borrowed(_) => None,
    };
    match changed {
        Some(b) => Cow::Owned(b),
        None => a,
    }
}

/// [`text`] for a single URL (`redis://:pw@host:6379/0` → `redis://<set>@host:6379/0`).
#[must_use]
pub fn url(s: &str) -> Cow<'_, str> {
    text(s)
}

/// Where a URL or a `name=value` value ends in free text.
fn ends_token(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>' | ')' | '(' | '[' | ']')
}

fn userinfo(s: &str) -> Cow<'_, str> {
    if !s.contains("://") {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| ends_token(c) || matches!(c, '/' | '?' | '#'))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) if at > 0 => {
                out.push_str(SET);
                out.push_str(&authority[at..]);
                changed = true;
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(s)
    }
}

fn pairs(s: &str) -> Cow<'_, str> {
    if !s.contains('=') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut last = 0;
    for (i, _) in s.match_indices('=') {
        if i < last {
            continue;
        }
        let name_start = s[..i]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let name = &s[name_start..i];
        if name.is_empty() || !is_secret_param(name) {
            continue;
        }
        let value_start = i + 1;
        let value = &s[value_start..];
        if value.starts_with(SET) {
            continue;
        }
        let len = value
            .find(|c: char| ends_token(c) || matches!(c, '&' | ';' | ',' | '#'))
            .unwrap_or(value.len());
        if len == 0 {
            continue;
        }
        out.push_str(&s[last..value_start]);
        out.push_str(SET);
        last = value_start + len;
        changed = true;
    }
    if !changed {
        return Cow::Borrowed(s);
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// Puts the stored secrets back into a namespace document sent by an admin: wherever a target's
/// `config` or a `backendConfig` holds a string with [`SET`] that is the redacted form of the
/// stored value at the same place (the placeholder itself, or a URL whose userinfo or secret
/// parameter reads `<set>`), the stored value is taken. Targets are matched by `identifier` and
/// `region`, mirrors by `name` (default: the backend), everything inside by key and position.
///
/// Returns one error per placeholder with nothing to stand for (a new target, a changed URL,
/// or `stored` is `None`: a namespace being created), naming its field.
pub fn restore_namespace(incoming: &mut Value, stored: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Value::Object(ns) = incoming else {
        return errs;
    };
    let stored_field = |k: &str| stored.and_then(|s| s.get(k));
    if let Some(Value::Array(list)) = ns.get_mut("targetConfigs") {
        let old = stored_field("targetConfigs").and_then(Value::as_array);
        for (i, t) in list.iter_mut().enumerate() {
            let want = target_key(t);
            let before = old.and_then(|o| o.iter().find(|s| target_key(s) == want));
            if let Some(c) = t.get_mut("config") {
                let path = format!("targetConfigs[{i}].config");
                restore(c, before.and_then(|s| s.get("config")), &path, &mut errs);
            }
        }
    }
    if let Some(c) = ns.get_mut("backendConfig") {
        let before = stored_field("backendConfig");
        restore(c, before, "backendConfig", &mut errs);
    }
    if let Some(Value::Array(list)) = ns.get_mut("mirrors") {
        let old = stored_field("mirrors").and_then(Value::as_array);
        for (i, m) in list.iter_mut().enumerate() {
            let want = mirror_key(m);
            let before = old.and_then(|o| o.iter().find(|s| mirror_key(s) == want));
            if let Some(c) = m.get_mut("backendConfig") {
                let path = format!("mirrors[{i}].backendConfig");
                restore(
                    c,
                    before.and_then(|s| s.get("backendConfig")),
                    &path,
                    &mut errs,
                );
            }
        }
    }
    errs
}

/// A target's identity in a list: its identifier and region.
fn target_key(t: &Value) -> (Option<Value>, Option<Value>) {
    (t.get("identifier").cloned(), t.get("region").cloned())
}

/// A mirror's identity in a list: its name, else its backend (the default name).
fn mirror_key(m: &Value) -> Option<Value> {
    m.get("name").or_else(|| m.get("backend")).cloned()
}

fn restore(v: &mut Value, stored: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    match v {
        Value::String(s) if s.contains(SET) => {
            let sent = s.as_str();
            let same = match stored {
                Some(Value::String(o)) => sent == SET || text(o) == sent,
                Some(Value::Null) | None => false,
                Some(_) => sent == SET,
            };
            match stored {
                Some(o) if same => *v = o.clone(),
                _ => errs.push(FieldError::new(
                    path,
                    format!(
                        "holds `{SET}`, the placeholder of a stored secret, but there is no stored \
                         value it stands for here (a new target or mirror, or a changed URL): \
                         give the value itself"
                    ),
                )),
            }
        }
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                let before = stored.and_then(|s| s.get(k.as_str()));
                restore(val, before, &format!("{path}.{k}"), errs);
            }
        }
        Value::Array(a) => {
            for (i, val) in a.iter_mut().enumerate() {
                let before = stored.and_then(|s| s.get(i));
                restore(val, before, &format!("{path}[{i}]"), errs);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
#[path = "redact_tests.rs"]
mod tests;
