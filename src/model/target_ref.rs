//! What a message may name as its targets: the namespace's, never the writer's.
//!
//! A message names targets of its namespace by `identifier` (every region declared under that
//! identifier). A target object in a message is accepted only when the namespace sets
//! `adHocTargets` (an operator's choice) and only for the `webhook` and `http_service` types,
//! which connect under the server's `[egress]` policy. A writer therefore never steers the
//! server to a file, a database or a cache (or their credentials) the operator did not
//! declare. The same rule runs at intake (a 400 naming the field) and again when a stored
//! message is delivered (records written before the rule, or before the namespace changed,
//! are refused with the reason).

use super::namespace::Namespace;
use super::target::{TargetConfig, TargetType};
use super::validate::{index, FieldError};
use super::write::TargetRef;

/// True for the target types a message may bring itself (where the namespace allows it).
#[must_use]
pub fn ad_hoc_allowed_type(kind: TargetType) -> bool {
    matches!(kind, TargetType::Webhook | TargetType::HttpService)
}

/// The reason an ad-hoc target object is refused in `ns`, if it is.
#[must_use]
pub fn ad_hoc_refusal(ns: &Namespace, t: &TargetConfig) -> Option<String> {
    if !ns.ad_hoc_targets {
        return Some(format!(
            "namespace '{}' does not accept target objects in messages (adHocTargets is false); \
             name one of its targetConfigs by identifier{}",
            ns.name,
            declared_list(ns)
        ));
    }
    if !ad_hoc_allowed_type(t.kind) {
        return Some(format!(
            "a message may bring only webhook or http_service targets, not `{}`; declare it in \
             the namespace's targetConfigs and name it by identifier",
            t.kind.as_str()
        ));
    }
    None
}

fn declared_list(ns: &Namespace) -> String {
    let mut ids: Vec<&str> = ns
        .target_configs
        .iter()
        .map(|t| t.identifier.as_str())
        .collect();
    ids.dedup();
    if ids.is_empty() {
        " (it declares none)".to_owned()
    } else {
        format!(" (one of: {})", ids.join(", "))
    }
}

/// The targets `refs` resolve to in `ns`, in order (a named target expands to every region
/// declared under its identifier). Errors name `{path}[i]`.
///
/// # Errors
/// Every reference that names no declared target, every target object the namespace does not
/// accept, and duplicates.
pub fn resolve(
    ns: &Namespace,
    refs: &[TargetRef],
    path: &str,
) -> Result<Vec<TargetConfig>, Vec<FieldError>> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    let name = |i: usize| index(path, i);
    for (i, r) in refs.iter().enumerate() {
        match r {
            TargetRef::Named(id) => {
                let found: Vec<&TargetConfig> = ns
                    .target_configs
                    .iter()
                    .filter(|t| t.identifier == *id)
                    .collect();
                if found.is_empty() {
                    errs.push(FieldError::new(
                        name(i),
                        format!(
                            "namespace '{}' declares no target `{id}`{}",
                            ns.name,
                            declared_list(ns)
                        ),
                    ));
                }
                out.extend(found.into_iter().cloned());
            }
            TargetRef::Inline(t) => match ad_hoc_refusal(ns, t) {
                Some(why) => errs.push(FieldError::new(name(i), why)),
                None => out.push((**t).clone()),
            },
        }
    }
    let mut seen = std::collections::HashSet::new();
    for t in &out {
        if !seen.insert((t.identifier.as_str(), t.region.as_deref())) {
            errs.push(FieldError::new(
                path,
                format!(
                    "target `{}` is named twice in the same region",
                    t.identifier
                ),
            ));
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ns(ad_hoc: bool) -> Namespace {
        let mut n: Namespace = serde_json::from_value(json!({
            "name": "orders",
            "targetConfigs": [
                {"type": "webhook", "identifier": "hook", "config": {"url": "https://h.example/x"}},
                {"type": "webhook", "identifier": "hook", "region": "eu", "config": {"url": "https://eu.example/x"}},
                {"type": "file_system", "identifier": "f", "config": {"path": "out.jsonl"}}
            ]
        }))
        .unwrap();
        n.ad_hoc_targets = ad_hoc;
        n
    }

    fn inline(v: serde_json::Value) -> TargetRef {
        TargetRef::Inline(Box::new(serde_json::from_value(v).unwrap()))
    }

    #[test]
    fn a_named_target_expands_to_its_regions() {
        let got = resolve(&ns(false), &[TargetRef::Named("hook".into())], "target").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].region.as_deref(), Some("eu"));
    }

    #[test]
    fn unknown_names_and_objects_are_refused_with_the_field() {
        let e = resolve(&ns(false), &[TargetRef::Named("nope".into())], "target").unwrap_err();
        assert_eq!(e[0].field, "target[0]");
        assert!(e[0].message.contains("one of: hook, f"), "{}", e[0].message);
        let file = inline(json!({"type": "file_system", "identifier": "x",
            "config": {"path": "/etc/evil"}}));
        let hook = inline(json!({"type": "webhook", "identifier": "y",
            "config": {"url": "http://169.254.169.254/"}}));
        let e = resolve(
            &ns(false),
            &[TargetRef::Named("f".into()), hook.clone()],
            "target",
        )
        .unwrap_err();
        assert_eq!(e[0].field, "target[1]");
        assert!(e[0].message.contains("adHocTargets"), "{}", e[0].message);
        // Opted in: HTTP objects pass (egress is checked when connecting), files never.
        assert_eq!(resolve(&ns(true), &[hook], "target").unwrap().len(), 1);
        let e = resolve(&ns(true), &[file], "target").unwrap_err();
        assert!(e[0].message.contains("file_system"), "{}", e[0].message);
    }

    #[test]
    fn duplicates_are_refused() {
        let two = [TargetRef::Named("f".into()), TargetRef::Named("f".into())];
        assert!(resolve(&ns(false), &two, "target").is_err());
    }
}
