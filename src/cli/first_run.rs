//! The first start without an admin key: the server makes one, keeps only its SHA-256 in the
//! data directory (`admin.key.sha256`, mode 0600, synced), and prints the key once with the
//! next commands to run. Later starts use the stored digest; an admin key given in the
//! configuration, the environment or on the command line always wins (the file is then
//! ignored). To change a lost generated key: stop the server, delete the file, start again.

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::CliError;
use crate::config::Config;

/// The file holding the generated admin key's digest, in the data directory.
pub const DIGEST_FILE: &str = "admin.key.sha256";

/// What the first start generated, to print once the address is known.
#[derive(Debug)]
pub struct Generated {
    key: String,
    file: PathBuf,
}

/// Gives `config` an admin key when it has none: the stored digest, or a new key (returned,
/// for [`Generated::print`]).
///
/// # Errors
/// The digest file cannot be read (or is malformed) or written.
pub fn ensure_admin_key(config: &mut Config) -> Result<Option<Generated>, CliError> {
    if config.auth.has_admin_key() {
        return Ok(None);
    }
    let dir = config.server.data_dir.clone();
    let file = dir.join(DIGEST_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let digest = text.trim().to_owned();
            let ok = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
            if !ok {
                return Err(format!(
                    "{}: not a SHA-256 digest (64 hex digits); delete it to generate a new admin key",
                    file.display()
                )
                .into());
            }
            tracing::info!(file = %file.display(), "admin key: the one generated at the first start (its digest)");
            config.auth.admin_key_sha256 = Some(digest);
            return Ok(None);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("reading {}: {e}", file.display()).into()),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("wald_admin_{}", hex::encode(bytes));
    let digest = hex::encode(crate::config::sha256(&key));
    write_synced(&dir, &file, digest.as_bytes())?;
    config.auth.admin_key_sha256 = Some(digest);
    Ok(Some(Generated { key, file }))
}

/// Writes `bytes` to `file` through a synced temporary file and a rename, then syncs `dir`.
fn write_synced(dir: &Path, file: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let tmp = file.with_extension("sha256.tmp");
    let err = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(|e| err("creating", e))?;
        f.write_all(bytes).map_err(|e| err("writing", e))?;
        f.write_all(b"\n").map_err(|e| err("writing", e))?;
        f.sync_all().map_err(|e| err("syncing", e))?;
    }
    std::fs::rename(&tmp, file).map_err(|e| format!("renaming to {}: {e}", file.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))?;
    Ok(())
}

impl Generated {
    /// Prints the key, once, with the next three commands (for the address served).
    pub fn print(&self, url: &str) {
        let k = &self.key;
        println!(
            "\n\
No admin key was configured, so one was generated. It is shown this once; only its SHA-256\n\
is kept ({file}). Keep it somewhere safe:\n\
\n\
    export WALD_ADMIN_KEY={k}\n\
\n\
Next:\n\
    curl -s {url}/api/v1/health/readiness -H \"x-api-key: $WALD_ADMIN_KEY\"\n\
    curl -s -X POST {url}/api/v1/namespaces -H \"x-api-key: $WALD_ADMIN_KEY\" -H 'content-type: application/json' -d '{{\"name\":\"orders\"}}'\n\
    curl -s -X POST {url}/api/v1/wal/write -H \"x-api-key: $WALD_ADMIN_KEY\" -H 'content-type: application/json' -d '{{\"namespace\":\"orders\",\"payload\":{{\"hello\":\"world\"}}}}'\n",
            file = self.file.display(),
        );
        let _ = std::io::stdout().flush();
    }
}
