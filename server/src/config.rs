//! The server's configuration: a TOML file, every key optional, overridden by command-line flags
//! and environment variables (flags win). `promised config check FILE` validates a file with the
//! same code the server runs. An unknown key is an error, not a silent no-op: a misspelt limit
//! must not leave the default in force unnoticed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use promised_engine::wal::FsyncPolicy;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub durability: DurabilitySection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub tls: TlsSection,
}

/// TLS on the protocol port: on when both files are given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    /// How often due holds expire and old dedupe records are forgotten (a logged `tick`).
    pub expiry_tick_ms: Option<u64>,
    /// Transparent huge pages: "load" (default: for what is loaded at start, none while
    /// serving), "always" or "never".
    pub huge_pages: Option<crate::alloc::HugePages>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub max_batch_ops: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub write_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilitySection {
    /// "always" (default), "interval" (with `fsync_interval_ms`) or "never" (benchmarks only).
    pub fsync: Option<String>,
    pub fsync_interval_ms: Option<u64>,
    pub snapshot_every_records: Option<u64>,
    pub snapshot_every_secs: Option<u64>,
    pub segment_mb: Option<u64>,
    /// Write the log into segments zero-filled ahead (default true): faster syncs, one more
    /// segment-sized file in the data directory.
    pub preallocate_segments: Option<bool>,
    /// Syncs in flight at once under fsync always (default 2, at most 8): with 2, a batch is
    /// written and synced while the last one's sync runs. 1 waits for each sync in turn.
    pub concurrent_syncs: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// read, write or admin.
    pub role: String,
    pub token: String,
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: ConfigFile =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.validate().with_context(|| format!("{}", path.display()))?;
        Ok(config)
    }

    /// Checks what the types cannot say.
    pub fn validate(&self) -> anyhow::Result<()> {
        let l = &self.limits;
        for (name, v) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_in_flight", l.max_in_flight),
            ("limits.max_batch_ops", l.max_batch_ops),
        ] {
            ensure!(v != Some(0), "{name} must be at least 1");
        }
        for (name, v) in [
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms),
            ("limits.idle_timeout_ms", l.idle_timeout_ms),
            ("limits.write_timeout_ms", l.write_timeout_ms),
        ] {
            ensure!(v != Some(0), "{name} must be at least 1");
        }
        ensure!(
            self.server.expiry_tick_ms != Some(0),
            "server.expiry_tick_ms must be at least 1"
        );
        ensure!(
            self.tls.cert.is_some() == self.tls.key.is_some(),
            "tls: give both cert and key, or neither"
        );
        let d = &self.durability;
        fsync_policy(d.fsync.as_deref().unwrap_or("always"), d.fsync_interval_ms)?;
        ensure!(
            d.segment_mb != Some(0),
            "durability.segment_mb must be at least 1"
        );
        ensure!(
            d.concurrent_syncs.is_none_or(|n| (1..=8).contains(&n)),
            "durability.concurrent_syncs must be between 1 and 8"
        );
        for t in &self.auth.tokens {
            role_of(&t.role)?;
            ensure!(
                t.token.len() >= 8,
                "auth.tokens: a token must have at least 8 characters"
            );
        }
        Ok(())
    }

    /// The tokens as `ROLE:TOKEN` strings, the form the `--token` flag takes.
    pub fn token_specs(&self) -> Vec<String> {
        self.auth
            .tokens
            .iter()
            .map(|t| format!("{}:{}", t.role, t.token))
            .collect()
    }
}

pub fn role_of(role: &str) -> anyhow::Result<promised_schemas::wire::Role> {
    use promised_schemas::wire::Role;
    Ok(match role {
        "read" => Role::Read,
        "write" => Role::Write,
        "admin" => Role::Admin,
        _ => bail!("unknown role {role:?}: read, write or admin"),
    })
}

/// The fsync policy from its name and, for `interval`, its period.
pub fn fsync_policy(name: &str, interval_ms: Option<u64>) -> anyhow::Result<FsyncPolicy> {
    Ok(match name {
        "always" => FsyncPolicy::Always,
        "never" => FsyncPolicy::Never,
        "interval" => {
            let ms = interval_ms.context("fsync = \"interval\" needs fsync_interval_ms")?;
            ensure!(ms >= 1, "fsync_interval_ms must be at least 1");
            FsyncPolicy::Interval(Duration::from_millis(ms))
        }
        _ => match name.strip_prefix("interval-ms=").and_then(|n| n.parse().ok()) {
            Some(ms) if ms >= 1 => FsyncPolicy::Interval(Duration::from_millis(ms)),
            _ => bail!("fsync: always, interval (with fsync_interval_ms) or never, not {name:?}"),
        },
    })
}

/// `promised config check FILE`: prints the effective settings or the first problem.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let c = ConfigFile::load(path)?;
    println!("{}: OK", path.display());
    let or = |v: Option<String>, d: &str| v.unwrap_or_else(|| format!("{d} (default)"));
    println!(
        "  listen:          {}",
        or(c.server.listen.map(|a| a.to_string()), "127.0.0.1:7411")
    );
    println!(
        "  data_dir:        {}",
        or(
            c.server.data_dir.as_ref().map(|p| p.display().to_string()),
            "promised-data"
        )
    );
    println!("  fsync:           {}", or(c.durability.fsync.clone(), "always"));
    println!(
        "  huge_pages:      {}",
        or(c.server.huge_pages.map(|h| h.name().to_string()), "load")
    );
    println!(
        "  max_connections: {}",
        or(c.limits.max_connections.map(|v| v.to_string()), "10000")
    );
    println!(
        "  max_in_flight:   {}",
        or(c.limits.max_in_flight.map(|v| v.to_string()), "1024")
    );
    println!(
        "  max_batch_ops:   {}",
        or(c.limits.max_batch_ops.map(|v| v.to_string()), "10000")
    );
    println!("  tokens:          {}", c.auth.tokens.len());
    println!(
        "  tls:             {}",
        c.tls
            .cert
            .as_ref()
            .map_or("off".to_string(), |p| format!("on ({})", p.display()))
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        let c: ConfigFile = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn a_full_file_parses() {
        let c = parse(
            r#"
            [server]
            listen = "0.0.0.0:7411"
            data_dir = "/var/lib/promised"
            [limits]
            max_connections = 500
            max_in_flight = 64
            [durability]
            fsync = "interval"
            fsync_interval_ms = 5
            [[auth.tokens]]
            role = "admin"
            token = "a-long-secret"
            "#,
        )
        .unwrap();
        assert_eq!(c.limits.max_connections, Some(500));
        assert_eq!(c.token_specs(), vec!["admin:a-long-secret".to_string()]);
        assert!(parse("").is_ok(), "every key is optional");
    }

    #[test]
    fn huge_pages_take_a_mode() {
        use crate::alloc::HugePages;
        assert_eq!(parse("").unwrap().server.huge_pages, None);
        let c = parse("[server]\nhuge_pages = \"always\"\n").unwrap();
        assert_eq!(c.server.huge_pages, Some(HugePages::Always));
        let e = parse("[server]\nhuge_pages = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("load") && e.contains("never"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[limits]\nmax_conections = 5\n").unwrap_err().to_string();
        assert!(e.contains("max_conections"), "{e}");
        let e = parse("[limits]\nmax_in_flight = 0\n").unwrap_err().to_string();
        assert!(e.contains("max_in_flight must be at least 1"), "{e}");
        let e = parse("[durability]\nfsync = \"interval\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fsync_interval_ms"), "{e}");
        let e = parse("[[auth.tokens]]\nrole = \"root\"\ntoken = \"a-long-secret\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown role"), "{e}");
        let e = parse("[server]\nlisten = \"not an address\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen"), "{e}");
        let e = parse("[tls]\ncert = \"server.pem\"\n").unwrap_err().to_string();
        assert!(e.contains("both cert and key"), "{e}");
        let e = parse("[server]\nexpiry_tick_ms = 0\n").unwrap_err().to_string();
        assert!(e.contains("expiry_tick_ms"), "{e}");
        for n in [0, 9] {
            let e = parse(&format!("[durability]\nconcurrent_syncs = {n}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("concurrent_syncs must be between 1 and 8"), "{e}");
        }
        assert!(parse("[durability]\nconcurrent_syncs = 1\n").is_ok());
    }
}
