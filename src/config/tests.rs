use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sha2::Digest;
use wald_storage::LogConfig;

use super::*;

const EXAMPLE: &str = include_str!("../../wald.example.toml");

/// The example with every commented-out setting enabled: a `#` directly followed by
/// anything but a space or `#` is removed.
fn uncommented_example() -> String {
    EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if !rest.starts_with([' ', '#']) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

fn invalid_key(result: Result<(), ConfigError>) -> String {
    match result {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn defaults_validate() {
    let config = Config::default();
    config.validate().unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(config.server.data_dir, Path::new("./data"));
    assert_eq!(config.server.max_body_bytes, 17 * 1024 * 1024);
    assert!(config.auth.requires_api_key(), "closed by default");
    assert!(!config.server.cors.enabled());
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(parse("").unwrap(), Config::default());
}

#[test]
fn example_as_shipped_is_the_defaults() {
    assert_eq!(parse(EXAMPLE).unwrap(), Config::default());
}

#[test]
fn example_uncommented_validates_and_matches_the_code() {
    let config = parse(&uncommented_example()).unwrap();
    config.validate().unwrap();

    // Every scalar documented "at its default" is the code's default; only the optional
    // keys shown with an example value differ.
    let mut expected = Config::default();
    expected.auth.admin_key_sha256 =
        Some("e46ccecc1691daf270e15a2bc9d7f81dd085fcf642a6e59cd7de6bbf796b81be".into());
    expected.storage.retention_max_age_secs = Some(604_800);
    expected.storage.retention_max_bytes = Some(10 << 30);
    expected.delivery.file_root = Some("/var/lib/wald-files".into());
    assert_eq!(config.server, expected.server);
    assert_eq!(config.storage, expected.storage);
    assert_eq!(config.rate_limits, expected.rate_limits);
    assert_eq!(config.delivery, expected.delivery);
    assert_eq!(config.auth.admin_key, None);
    assert_eq!(config.auth.admin_key_sha256, expected.auth.admin_key_sha256);
    assert!(!config.auth.require_api_key);

    // The worked examples.
    assert_eq!(config.auth.api_keys.len(), 2);
    let ring = config.auth.keyring();
    assert!(ring.requires_api_key());
    assert!(ring.verify("change-me-admin-key").unwrap().admin);
    let writer = ring.verify("change-me-orders-writer-key").unwrap();
    assert_eq!(writer.id, "orders-writer");
    assert!(writer.namespaces.allows("orders"));
    assert!(!writer.namespaces.allows("payments"));
    let reader = ring.verify("change-me-ops-reader-key").unwrap();
    assert_eq!(
        (reader.id.as_str(), &reader.namespaces),
        ("ops-reader", &NamespaceAccess::All)
    );
    let declared = config.declared_namespaces::<Namespace>().unwrap();
    assert_eq!(declared.len(), 1);
    let orders = &declared[0];
    assert_eq!(orders.name, "orders");
    assert_eq!(orders.shard_config.partition_count, 4);
    assert_eq!(orders.retry_policy.max_attempts, 5);
    assert_eq!(orders.target_configs[0].identifier, "orders-hook");
    assert_eq!(orders.target_configs[0].config["timeoutMs"], 5000);
    let access = orders.access_control.as_ref().unwrap();
    assert_eq!(access.allowed_api_keys, ["orders-writer"]);
    assert_eq!(access.rate_limits.as_ref().unwrap().burst_limit, 50);
    assert!(config.cluster.owns("orders"));
    assert!(matches!(
        config.cluster.owner("payments"),
        crate::config::Owner::Remote(m) if m.id == "b"
    ));
}

/// Field names of a struct, read from its `Debug` output (`name: value`).
fn debug_fields(debug: &str) -> Vec<String> {
    debug
        .split(": ")
        .filter_map(|chunk| {
            let name: String = chunk
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let name: String = name.chars().rev().collect();
            (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
        })
        .collect()
}

#[test]
fn example_documents_every_key() {
    let sections = [
        format!("{:?}", ServerConfig::default()),
        format!("{:?}", AuthConfig::default()),
        format!("{:?}", ApiKeyConfig::default()),
        format!("{:?}", StorageConfig::default()),
        format!("{:?}", RateLimitsConfig::default()),
        format!("{:?}", DeliveryConfig::default()),
        format!("{:?}", crate::config::ClusterConfig::default()),
    ];
    let mut fields = BTreeSet::new();
    for debug in &sections {
        fields.extend(debug_fields(debug));
    }
    assert!(fields.contains("max_delay_secs") && fields.contains("key_sha256"));
    for field in fields {
        if field == "cors" || field == "api_keys" || field == "assign" {
            assert!(
                EXAMPLE.contains(&format!("[{field}]")) || EXAMPLE.contains(&format!(".{field}]"))
            );
            continue;
        }
        let setting = format!("{field} = ");
        assert!(
            EXAMPLE
                .lines()
                .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&setting)),
            "wald.example.toml does not document `{field}`"
        );
    }
}

/// The leaves of a table as (dotted key, text as an environment variable would give it).
fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if key == "cluster.assign" {
            continue; // namespace names, not keys
        }
        let text = match v {
            toml::Value::Table(t) => {
                walk(&key, t, out);
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(a) if a.iter().all(toml::Value::is_str) => a
                .iter()
                .filter_map(toml::Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Array(_) => continue, // [[auth.api_keys]], [[namespaces]]
            other => other.to_string(),
        };
        out.push((key, text));
    }
}

#[test]
fn every_example_scalar_is_settable_from_the_environment() {
    let table: toml::Table = toml::from_str(&uncommented_example()).unwrap();
    let mut leaves = Vec::new();
    walk("", &table, &mut leaves);
    assert!(leaves.len() >= 25, "{leaves:?}");
    let mut from_env = Config::default();
    for (key, text) in &leaves {
        from_env
            .set_key(key, text)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let from_file = parse(&uncommented_example()).unwrap();
    assert_eq!(from_env.server, from_file.server);
    assert_eq!(from_env.storage, from_file.storage);
    assert_eq!(from_env.rate_limits, from_file.rate_limits);
    assert_eq!(
        from_env.auth.admin_key_sha256,
        from_file.auth.admin_key_sha256
    );
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("[server]\nrequest_timeout_ms = 5", "server.request_timeout_ms"),
        ("[server]\nmax_body_bytes = 10", "server.max_body_bytes"),
        ("[server]\nshutdown_grace_ms = 3600001", "server.shutdown_grace_ms"),
        ("[server]\nmax_delay_secs = 2592001", "server.max_delay_secs"),
        ("[server]\nheader_read_timeout_ms = 5", "server.header_read_timeout_ms"),
        ("[server]\nidle_timeout_ms = 3600001", "server.idle_timeout_ms"),
        ("[server]\nmax_connections = 0", "server.max_connections"),
        ("[server]\nmax_read_bytes = 10", "server.max_read_bytes"),
        ("[server]\nmax_concurrent_reads = 0", "server.max_concurrent_reads"),
        ("[server]\nio_threads = 257", "server.io_threads"),
        ("[server]\ndata_dir = \"\"", "server.data_dir"),
        ("[server.cors]\nallowed_origins = [\"*\", \"https://a.example\"]", "server.cors.allowed_origins"),
        ("[server.cors]\nallowed_origins = [\"https://a.example/path\"]", "server.cors.allowed_origins[0]"),
        ("[server.cors]\nallowed_methods = [\"GET\", \"post\"]", "server.cors.allowed_methods[1]"),
        ("[server.cors]\nallowed_headers = [\"X Bad\"]", "server.cors.allowed_headers[0]"),
        ("[server.cors]\nmax_age_secs = 86401", "server.cors.max_age_secs"),
        ("[auth]\nadmin_key = \"\"", "auth.admin_key"),
        ("[auth]\nadmin_key_sha256 = \"abc\"", "auth.admin_key_sha256"),
        ("[auth]\nadmin_key = \"k\"\nadmin_key_sha256 = \"e46ccecc1691daf270e15a2bc9d7f81dd085fcf642a6e59cd7de6bbf796b81be\"", "auth.admin_key_sha256"),
        ("[auth]\nopen = true\nrequire_api_key = true", "auth.require_api_key"),
        ("[auth]\nadmin_key = \"short\"", "auth.admin_key"),
        ("[auth]\nfailed_auth_per_minute = 0", "auth.failed_auth_per_minute"),
        ("[[auth.api_keys]]\nkey = \"k\"\nnamespaces = [\"*\"]", "auth.api_keys[0].id"),
        ("[[auth.api_keys]]\nid = \"admin\"\nkey = \"k\"\nnamespaces = [\"*\"]", "auth.api_keys[0].id"),
        ("[[auth.api_keys]]\nid = \"a\"\nnamespaces = [\"*\"]", "auth.api_keys[0].key"),
        ("[[auth.api_keys]]\nid = \"a\"\nkey = \"k\"", "auth.api_keys[0].namespaces"),
        ("[[auth.api_keys]]\nid = \"a\"\nkey = \"k\"\nnamespaces = [\"  \"]", "auth.api_keys[0].namespaces[0]"),
        ("[[auth.api_keys]]\nid = \"a\"\nkey = \"k\"\nnamespaces = [\"*\"]\n[[auth.api_keys]]\nid = \"a\"\nkey = \"j\"\nnamespaces = [\"*\"]", "auth.api_keys[1].id"),
        ("[[auth.api_keys]]\nid = \"a\"\nkey = \"k\"\nnamespaces = [\"*\"]\n[[auth.api_keys]]\nid = \"b\"\nkey = \"k\"\nnamespaces = [\"*\"]", "auth.api_keys[1]"),
        ("[auth]\nadmin_key = \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\n[[auth.api_keys]]\nid = \"a\"\nkey = \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"\nnamespaces = [\"*\"]", "auth.api_keys[0]"),
        ("[storage]\nsegment_bytes = 10", "storage.segment_bytes"),
        ("[storage]\nsegment_max_age_secs = 0", "storage.segment_max_age_secs"),
        ("[storage]\nmax_record_bytes = 134217728", "storage.max_record_bytes"),
        ("[storage]\nindex_interval_bytes = 0", "storage.index_interval_bytes"),
        ("[storage]\nmax_batch_bytes = 0", "storage.max_batch_bytes"),
        ("[storage]\nmax_pending_bytes = 1", "storage.max_pending_bytes"),
        ("[storage]\nbackground_sync_interval_ms = 0", "storage.background_sync_interval_ms"),
        ("[storage]\nretention_max_age_secs = 0", "storage.retention_max_age_secs"),
        ("[storage]\nretention_max_bytes = 0", "storage.retention_max_bytes"),
        ("[rate_limits]\nrequests_per_minute = 0", "rate_limits.requests_per_minute"),
        ("[rate_limits]\nrequests_per_hour = 10", "rate_limits.requests_per_hour"),
        ("[rate_limits]\nburst = 0", "rate_limits.burst"),
        ("[[namespaces]]\nname = \"a b\"", "namespaces[0].name"),
        ("[[namespaces]]\nname = \"Orders\"\n[[namespaces]]\nname = \" orders \"", "namespaces[1].name"),
        ("[[namespaces]]\nname = \"a\"\nshardConfig = { partitionCount = 0 }", "namespaces[0].shardConfig.partitionCount"),
        ("[[namespaces]]\nname = \"a\"\naccessControl = { allowedApiKeys = [\"nobody\"] }", "namespaces[0].accessControl.allowedApiKeys[0]"),
    ];
    for (text, key) in cases {
        let config = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(invalid_key(config.validate()), key, "{text}");
    }
}

#[test]
fn validation_message_is_the_dotted_key_and_reason() {
    let config = parse("[server]\nrequest_timeout_ms = 5").unwrap();
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "server.request_timeout_ms: must be between 100 and 3600000 (got 5)"
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_naming_key_and_line() {
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nrequest_timout_ms = 5\n",
            "server.request_timout_ms",
            3,
        ),
        ("[servr]\nlisten = \"127.0.0.1:1\"\n", "servr", 1),
        ("[server.cors]\nmax_age = 5\n", "server.cors.max_age", 2),
        (
            "[[auth.api_keys]]\nid = \"a\"\nsecret = \"k\"\n",
            "auth.api_keys[0].secret",
            3,
        ),
        (
            "[storage]\n\nsegment_bytes = \"big\"\n",
            "storage.segment_bytes",
            3,
        ),
        (
            "[storage]\npreallocate = \"fallocate\"\n",
            "storage.preallocate",
            2,
        ),
        ("[server]\nlisten = \"localhost\"\n", "server.listen", 2),
    ];
    for (text, want_key, want_line) in cases {
        match parse(text) {
            Err(ConfigError::Parse {
                key,
                line,
                message,
                path,
            }) => {
                assert_eq!(key.as_deref(), Some(want_key), "{text}: {message}");
                assert_eq!(line, Some(want_line), "{text}: {message}");
                assert_eq!(path, Path::new("test.toml"));
            }
            other => panic!("{text}: expected Parse, got {other:?}"),
        }
    }
    let err = parse("[server]\nrequest_timout_ms = 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("test.toml:2: server.request_timout_ms: unknown field `request_timout_ms`"),
        "{err}"
    );
    // Broken syntax still names the file and line.
    let Err(ConfigError::Parse { line, .. }) = parse("[server\n") else {
        panic!()
    };
    assert_eq!(line, Some(1));
}

#[test]
fn missing_file_names_it() {
    let err = Config::from_file(Path::new("/nonexistent/wald.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::File { .. }));
    assert!(err.to_string().contains("/nonexistent/wald.toml"), "{err}");
}

#[test]
fn file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wald.toml");
    std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap();
    let config = Config::from_file(&path).unwrap();
    assert_eq!(config.server.listen.port(), 8080);
    std::fs::write(&path, "[server]\nport = 1\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    assert!(
        err.contains(&path.display().to_string()) && err.contains("server.port"),
        "{err}"
    );
}

#[test]
fn environment_overrides() {
    let mut config = parse("[server]\nrequest_timeout_ms = 1000\n[auth]\nadmin_key_sha256 = \"e46ccecc1691daf270e15a2bc9d7f81dd085fcf642a6e59cd7de6bbf796b81be\"").unwrap();
    config
        .apply_env([
            ("WALD_LISTEN", "0.0.0.0:9000"),
            ("WALD_DATA_DIR", "/var/lib/wald"),
            ("WALD_ADMIN_KEY", "from-env-0123456789abcdef0123456789"),
            ("WALD_SERVER__REQUEST_TIMEOUT_MS", "5000"),
            (
                "WALD_server__cors__allowed_origins",
                "https://a.example, https://b.example",
            ),
            ("WALD_STORAGE__SEGMENT_BYTES", "16777216"),
            ("WALD_STORAGE__PREALLOCATE", "none"),
            ("WALD_STORAGE__RECOVERY_MODE", "absolute_consistency"),
            ("WALD_STORAGE__VERIFY_ON_OPEN", "false"),
            ("WALD_STORAGE__RETENTION_MAX_BYTES", "1000000"),
            ("WALD_RATE_LIMITS__ENABLED", "true"),
            ("WALD_RATE_LIMITS__BURST", "7"),
            ("WALD_LOG", "debug"), // not configuration: ignored
            ("HOME", "/root"),     // not ours
        ])
        .unwrap();
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(config.server.data_dir, Path::new("/var/lib/wald"));
    assert_eq!(config.server.request_timeout_ms, 5000);
    assert_eq!(
        config.server.cors.allowed_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(config.storage.segment_bytes, 16 << 20);
    assert_eq!(config.storage.preallocate, PreallocateSetting::None);
    assert_eq!(
        config.storage.recovery_mode,
        RecoveryModeSetting::AbsoluteConsistency
    );
    assert!(!config.storage.verify_on_open);
    assert_eq!(config.storage.retention_max_bytes, Some(1_000_000));
    assert!(config.rate_limits.enabled);
    assert_eq!(config.rate_limits.burst, 7);
    // WALD_ADMIN_KEY replaces the file's hashed admin key.
    assert_eq!(
        config.auth.admin_key.as_deref(),
        Some("from-env-0123456789abcdef0123456789")
    );
    assert_eq!(config.auth.admin_key_sha256, None);
    config.validate().unwrap();
    assert!(
        config
            .auth
            .verify("from-env-0123456789abcdef0123456789")
            .unwrap()
            .admin
    );

    // An empty value unsets an optional key.
    config
        .apply_env([("WALD_STORAGE__RETENTION_MAX_BYTES", "")])
        .unwrap();
    assert_eq!(config.storage.retention_max_bytes, None);
}

#[test]
fn contract_variables_win_over_the_general_form() {
    let mut config = Config::default();
    config
        .apply_env([
            ("WALD_LISTEN", "127.0.0.1:1"),
            ("WALD_SERVER__LISTEN", "127.0.0.1:2"),
        ])
        .unwrap();
    assert_eq!(config.server.listen.port(), 1);
}

#[test]
fn bad_environment_values_name_the_variable() {
    let cases = [
        (
            "WALD_SERVER__REQUEST_TIMEOUT_MS",
            "soon",
            "server.request_timeout_ms",
        ),
        ("WALD_LISTEN", "localhost", "server.listen"),
        (
            "WALD_STORAGE__PREALLOCATE",
            "fallocate",
            "storage.preallocate",
        ),
        ("WALD_AUTH__REQUIRE_API_KEY", "yes", "auth.require_api_key"),
        (
            "WALD_SERVER__REQUEST_TIMOUT_MS",
            "5",
            "server.request_timout_ms",
        ),
        ("WALD_AUTH__API_KEYS", "k", "auth.api_keys"),
        ("WALD_ADMIN_KEY", "", "auth.admin_key"),
    ];
    for (var, value, key) in cases {
        match Config::default().apply_env([(var, value)]) {
            Err(ConfigError::Env { var: v, message }) => {
                assert_eq!(v, var);
                assert!(message.contains(key), "{var}: {message}");
            }
            other => panic!("{var}: expected Env, got {other:?}"),
        }
    }
    // Out of range is found by validation, naming the key.
    let mut config = Config::default();
    config
        .apply_env([("WALD_SERVER__REQUEST_TIMEOUT_MS", "1")])
        .unwrap();
    assert_eq!(invalid_key(config.validate()), "server.request_timeout_ms");
}

#[test]
fn cli_overrides_win() {
    let mut config =
        parse("[server]\nlisten = \"127.0.0.1:1\"\n[auth]\nadmin_key = \"file\"").unwrap();
    config.apply_env([("WALD_LISTEN", "127.0.0.1:2")]).unwrap();
    config.apply_cli(
        Some("127.0.0.1:3".parse().unwrap()),
        Some("/d".into()),
        Some("cli".into()),
    );
    assert_eq!(config.server.listen.port(), 3);
    assert_eq!(config.server.data_dir, Path::new("/d"));
    assert!(config.auth.verify("cli").is_some());
    assert!(config.auth.verify("file").is_none());
    config.apply_cli(None, None, None);
    assert_eq!(config.server.listen.port(), 3);
}

#[test]
fn key_verification() {
    let sha = |s: &str| hex::encode(sha2::Sha256::digest(s.as_bytes()));
    let text = format!(
        "[auth]\nadmin_key_sha256 = \"{}\"\n\
         [[auth.api_keys]]\nid = \"w\"\nkey = \"plain-key\"\nnamespaces = [\" Orders \", \"audit\"]\n\
         [[auth.api_keys]]\nid = \"h\"\nkey_sha256 = \"{}\"\nnamespaces = [\"*\"]\n",
        sha("admin-secret").to_uppercase(),
        sha("hashed-key"),
    );
    let config = parse(&text).unwrap();
    config.validate().unwrap();
    let auth = &config.auth;
    assert!(auth.requires_api_key());

    let admin = auth.verify("admin-secret").unwrap();
    assert_eq!((admin.id.as_str(), admin.admin), (ADMIN_KEY_ID, true));
    assert!(admin.namespaces.allows("anything"));

    let w = auth.verify("plain-key").unwrap();
    assert_eq!((w.id.as_str(), w.admin), ("w", false));
    assert_eq!(
        w.namespaces,
        NamespaceAccess::Only(["audit".to_owned(), "orders".to_owned()].into())
    );
    assert!(w.namespaces.allows("orders") && !w.namespaces.allows("other"));

    let h = auth.verify("hashed-key").unwrap();
    assert_eq!(h.namespaces, NamespaceAccess::All);

    for wrong in [
        "",
        "plain-key ",
        "Plain-key",
        "hashed-ke",
        &sha("hashed-key"),
    ] {
        assert!(auth.verify(wrong).is_none(), "{wrong:?}");
    }
    let ring = auth.keyring();
    assert_eq!(ring.verify("hashed-key").map(|k| k.id.as_str()), Some("h"));
}

#[test]
fn closed_unless_open() {
    let config = Config::default();
    assert!(
        config.auth.requires_api_key(),
        "keys are required by default"
    );
    assert!(config.auth.verify("anything").is_none());
    let config = parse("[auth]\nopen = true").unwrap();
    config.validate().unwrap();
    assert!(!config.auth.keyring().requires_api_key());
}

#[test]
fn the_admin_key_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin.key");
    std::fs::write(&file, format!("{}\n", "k".repeat(40))).unwrap();
    let mut config = Config::default();
    config.auth.admin_key_file = Some(file);
    config.auth.read_admin_key_file().unwrap();
    config.validate().unwrap();
    assert!(config.auth.verify(&"k".repeat(40)).unwrap().admin);
    config.auth.admin_key_file = Some(dir.path().join("missing"));
    let e = config.auth.read_admin_key_file().unwrap_err().to_string();
    assert!(e.contains("auth.admin_key_file"), "{e}");
}

#[test]
fn debug_never_shows_a_key() {
    let config = parse(
        "[auth]\nadmin_key = \"top-secret-admin\"\n[[auth.api_keys]]\nid = \"a\"\nkey = \"top-secret-api\"\nnamespaces = [\"*\"]",
    )
    .unwrap();
    let shown = format!("{config:?} {:?}", config.auth.keyring());
    assert!(!shown.contains("top-secret"), "{shown}");
    assert!(shown.contains("\"a\""), "{shown}");
}

#[test]
fn log_config_mapping() {
    assert_eq!(StorageConfig::default().log_config(), LogConfig::default());
    let config = parse(
        "[storage]\nsegment_bytes = 1048576\nfirst_segment_bytes = 131072\nsegment_max_age_secs = 60\nmax_record_bytes = 65536\n\
         index_interval_bytes = 512\npreallocate = \"none\"\nmax_batch_bytes = 4096\n\
         max_pending_bytes = 131072\nbackground_sync_interval_ms = 250\n\
         recovery_mode = \"absolute_consistency\"\nverify_on_open = false\n\
         retention_max_age_secs = 3600\nretention_max_bytes = 1000000000",
    )
    .unwrap();
    config.validate().unwrap();
    let log = config.storage.log_config();
    assert_eq!(
        log,
        LogConfig {
            segment_bytes: 1 << 20,
            first_segment_bytes: 128 << 10,
            segment_max_age: Duration::from_secs(60),
            max_record_bytes: 65536,
            index_interval_bytes: 512,
            preallocate: wald_storage::Preallocate::None,
            max_batch_bytes: 4096,
            max_pending_bytes: 131_072,
            background_sync_interval: Duration::from_millis(250),
            recovery_mode: wald_storage::RecoveryMode::AbsoluteConsistency,
            verify_on_open: false,
            retention: wald_storage::Retention {
                max_age: Some(Duration::from_secs(3600)),
                max_bytes: Some(1_000_000_000),
            },
        }
    );
}

#[test]
fn declared_namespaces_are_normalised_and_type_errors_name_the_key() {
    let config =
        parse("[[namespaces]]\nname = \" Orders \"\nshardConfig = { strategy = \"round_robin\" }")
            .unwrap();
    config.validate().unwrap();
    let declared = config.declared_namespaces::<Namespace>().unwrap();
    assert_eq!(declared[0].name, "orders");
    assert_eq!(declared[0].topic_name(), "orders");
    assert_eq!(config.namespaces[0].name, " Orders ", "kept as written");

    let cases = [
        ("[[namespaces]]\nenabled = true", "namespaces[0]", 1),
        ("[[namespaces]]\nname = \"a\"\n[[namespaces]]\nname = \"b\"\nshardConfig = { partitionCount = \"x\" }", "namespaces[1].shardConfig.partitionCount", 5),
        ("[[namespaces]]\nname = \"a\"\nmaxMesageSize = 5", "namespaces[0].maxMesageSize", 3),
        ("[[namespaces]]\nname = \"a\"\ndurability = \"fast\"", "namespaces[0].durability", 3),
    ];
    for (text, want_key, want_line) in cases {
        match parse(text) {
            Err(ConfigError::Parse {
                key, line, message, ..
            }) => {
                assert_eq!(key.as_deref(), Some(want_key), "{text}: {message}");
                assert_eq!(line, Some(want_line), "{text}: {message}");
            }
            other => panic!("{text}: expected Parse, got {other:?}"),
        }
    }
}

#[test]
fn resolve_applies_cli_and_validates() {
    // No file: defaults, then CLI (the process environment of the test runner carries no
    // WALD_ configuration variables).
    if std::env::vars().any(|(k, _)| k.starts_with("WALD_")) {
        return;
    }
    let config = Config::resolve(None, None, Some("/tmp/x".into()), None).unwrap();
    assert_eq!(config.server.data_dir, Path::new("/tmp/x"));
    let err = Config::resolve(None, None, Some("".into()), None).unwrap_err();
    assert_eq!(invalid_key(Err(err)), "server.data_dir");
}

#[test]
fn delivery_section_is_validated_naming_the_key() {
    let c = parse("[delivery]\nwindow = 0\n").unwrap();
    assert_eq!(invalid_key(c.validate()), "delivery.window");
    let c = parse("[delivery]\npark_after_ms = 10\n").unwrap();
    assert_eq!(invalid_key(c.validate()), "delivery.park_after_ms");
    let c = parse("[delivery]\ntarget_timeout_ms = 400000\n").unwrap();
    assert_eq!(invalid_key(c.validate()), "delivery.target_timeout_ms");
    let c = parse("[delivery]\nreplay_rate_per_sec = 0\n").unwrap();
    assert_eq!(invalid_key(c.validate()), "delivery.replay_rate_per_sec");
    assert!(
        parse("[delivery]\nwindwo = 3\n").is_err(),
        "unknown keys are refused"
    );
    let c = parse("[delivery]\nenabled = false\nwindow = 64\n").unwrap();
    c.validate().unwrap();
    assert!(!c.delivery.enabled);
    assert_eq!(c.delivery.window, 64);
}
