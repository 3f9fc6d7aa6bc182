//! `[datastore]`: which [`Store`] the server runs on, and opening it.
//!
//! SQLite (the default) keeps everything in `<data_dir>/datastore.sqlite3` for one server;
//! PostgreSQL lets several servers share one trust domain's data (docs/ha.md). The
//! PostgreSQL URL is a secret when it carries a password: it is read from `url_file` or
//! `url`, never logged, printed or shown by `Debug`, and scrubbed from driver errors.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferrid_store::{PgSettings, PgSslMode, PgStore, SqliteStore, Store, redact_url};
use ferrid_types::config::{ConfigError, invalid};
use serde::Deserialize;

use crate::ServerError;

/// The SQLite file under `data_dir`.
pub const DATASTORE_FILE: &str = "datastore.sqlite3";

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum DatastoreKind {
    /// An embedded SQLite file under `data_dir` (one server).
    #[default]
    Sqlite,
    /// A PostgreSQL database (one or more servers).
    Postgres,
}

/// `[datastore]`
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreSection {
    /// `sqlite` (default) or `postgres`.
    #[serde(default)]
    pub kind: DatastoreKind,
    /// `postgres://user:password@host:port/db?…` (libpq-style). Prefer `url_file`.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the URL (trailing whitespace ignored), e.g. a mounted Secret.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Connections in each server's pool.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Longest wait to connect (or for a free pooled connection).
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// PostgreSQL `statement_timeout` of every connection.
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `disable`, `prefer`, `require`, `verify-ca`, `verify-full`; unset: the URL's own
    /// `sslmode` (libpq's default, `prefer`).
    #[serde(default)]
    pub sslmode: Option<PgSslMode>,
    /// PEM CA that signs the database's certificate (for `verify-ca` / `verify-full`),
    /// trusted besides the Mozilla roots sqlx verifies with.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl Default for DatastoreSection {
    fn default() -> Self {
        Self {
            kind: DatastoreKind::Sqlite,
            url: None,
            url_file: None,
            max_connections: default_max_connections(),
            connect_timeout: default_connect_timeout(),
            statement_timeout: default_statement_timeout(),
            sslmode: None,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for DatastoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatastoreSection")
            .field("kind", &self.kind)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("url_file", &self.url_file)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("sslmode", &self.sslmode)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

fn default_max_connections() -> u32 {
    10
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The keys only PostgreSQL uses, for refusing them under `kind = "sqlite"`.
const POSTGRES_ONLY: [&str; 4] =
    ["datastore.url", "datastore.url_file", "datastore.sslmode", "datastore.ca_file"];

impl DatastoreSection {
    /// Checks the values without touching the network or `url_file`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let set =
            [self.url.is_some(), self.url_file.is_some(), self.sslmode.is_some(), self.ca_file.is_some()];
        match self.kind {
            DatastoreKind::Sqlite => {
                if let Some(key) = POSTGRES_ONLY.iter().zip(set).find_map(|(k, s)| s.then_some(*k)) {
                    return Err(invalid(key, "only used with datastore.kind = \"postgres\""));
                }
            }
            DatastoreKind::Postgres => {
                match (&self.url, &self.url_file) {
                    (None, None) => {
                        return Err(invalid("datastore.url", "kind = \"postgres\" needs url or url_file"));
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid("datastore.url_file", "give url or url_file, not both"));
                    }
                    (Some(url), None) => check_url("datastore.url", url)?,
                    (None, Some(_)) => {}
                }
                if self.max_connections == 0 {
                    return Err(invalid("datastore.max_connections", "must be at least 1"));
                }
                if self.connect_timeout.is_zero() {
                    return Err(invalid("datastore.connect_timeout", "must be more than 0s"));
                }
                if self.statement_timeout < Duration::from_millis(100) {
                    return Err(invalid("datastore.statement_timeout", "must be at least 100ms"));
                }
                if self.ca_file.is_some() && matches!(self.sslmode, Some(PgSslMode::Disable)) {
                    return Err(invalid("datastore.ca_file", "set, but datastore.sslmode = \"disable\""));
                }
            }
        }
        Ok(())
    }

    /// The PostgreSQL settings, reading `url_file`. `None` for SQLite.
    pub fn postgres_settings(&self) -> Result<Option<PgSettings>, ConfigError> {
        if self.kind != DatastoreKind::Postgres {
            return Ok(None);
        }
        let url = match (&self.url, &self.url_file) {
            (Some(url), _) => url.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid("datastore.url_file", format!("cannot read {}: {e}", path.display()))
                })?;
                let url = text.trim().to_owned();
                check_url("datastore.url_file", &url)?;
                url
            }
            (None, None) => {
                return Err(invalid("datastore.url", "kind = \"postgres\" needs url or url_file"));
            }
        };
        let mut settings = PgSettings::new(url);
        settings.max_connections = self.max_connections;
        settings.connect_timeout = self.connect_timeout;
        settings.statement_timeout = self.statement_timeout;
        settings.ssl_mode = self.sslmode;
        settings.ca_file = self.ca_file.clone();
        Ok(Some(settings))
    }
}

/// A URL must parse and name PostgreSQL; the message never repeats the URL itself.
fn check_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| invalid(key, format!("not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(invalid(
            key,
            format!("scheme {:?}: expected postgres:// or postgresql://", parsed.scheme()),
        ));
    }
    Ok(())
}

/// Opens the configured datastore: the SQLite file under `data_dir`, or a pool to
/// PostgreSQL (migrations applied). Logs where, with any password redacted.
pub async fn open(section: &DatastoreSection, data_dir: &Path) -> Result<Arc<dyn Store>, ServerError> {
    match section.postgres_settings().map_err(ServerError::Config)? {
        None => {
            let db = data_dir.join(DATASTORE_FILE);
            let store = SqliteStore::open(&db).await?;
            tracing::info!(kind = "sqlite", path = %db.display(), "datastore open");
            Ok(Arc::new(store))
        }
        Some(settings) => {
            if section.url.as_deref().is_some_and(|u| redact_url(u) != u) {
                tracing::warn!(
                    "datastore.url carries a password in the config file; prefer datastore.url_file"
                );
            }
            let store = PgStore::connect(&settings).await?;
            tracing::info!(
                kind = "postgres",
                url = %redact_url(&settings.url),
                max_connections = settings.max_connections,
                "datastore open"
            );
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;

    fn parse(body: &str) -> Result<crate::config::ValidatedConfig, ConfigError> {
        ServerConfig::parse(&format!("trust_domain = \"example.org\"\n[datastore]\n{body}"))
    }

    #[test]
    fn sqlite_is_the_default() {
        let c = ServerConfig::parse("trust_domain = \"example.org\"\n").unwrap();
        assert_eq!(c.raw.datastore.kind, DatastoreKind::Sqlite);
        assert!(c.raw.datastore.postgres_settings().unwrap().is_none());
    }

    #[test]
    fn postgres_settings_carry_every_key() {
        let c = parse(
            "kind = \"postgres\"\nurl = \"postgres://ferrid@db.internal:5432/ferrid\"\n\
             max_connections = 4\nconnect_timeout = \"2s\"\nstatement_timeout = \"3s\"\n\
             sslmode = \"verify-full\"\nca_file = \"/etc/ferrid/db-ca.pem\"\n",
        )
        .unwrap();
        let s = c.raw.datastore.postgres_settings().unwrap().unwrap();
        assert_eq!(s.url, "postgres://ferrid@db.internal:5432/ferrid");
        assert_eq!(s.max_connections, 4);
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.statement_timeout, Duration::from_secs(3));
        assert_eq!(s.ssl_mode, Some(PgSslMode::VerifyFull));
        assert_eq!(s.ca_file.as_deref(), Some(Path::new("/etc/ferrid/db-ca.pem")));
    }

    #[test]
    fn url_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "postgresql://ferrid:s3cret@db/ferrid\n").unwrap();
        let c =
            parse(&format!("kind = \"postgres\"\nurl_file = {:?}\n", path.display().to_string())).unwrap();
        let s = c.raw.datastore.postgres_settings().unwrap().unwrap();
        assert_eq!(s.url, "postgresql://ferrid:s3cret@db/ferrid");

        std::fs::write(&path, "mysql://ferrid:s3cret@db/ferrid\n").unwrap();
        let e = c.raw.datastore.postgres_settings().unwrap_err().to_string();
        assert!(e.contains("datastore.url_file") && e.contains("expected postgres://"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");

        let missing = parse("kind = \"postgres\"\nurl_file = \"/nonexistent/ferrid-url\"\n").unwrap();
        let e = missing.raw.datastore.postgres_settings().unwrap_err().to_string();
        assert!(e.contains("datastore.url_file") && e.contains("/nonexistent/ferrid-url"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("kind = \"mysql\"", "kind"),
            ("kind = \"postgres\"", "datastore.url"),
            ("kind = \"postgres\"\nurl = \"postgres://h/d\"\nurl_file = \"/x\"", "datastore.url_file"),
            ("kind = \"postgres\"\nurl = \"not a url\"", "datastore.url"),
            ("kind = \"postgres\"\nurl = \"https://h/d\"", "datastore.url"),
            (
                "kind = \"postgres\"\nurl = \"postgres://h/d\"\nmax_connections = 0",
                "datastore.max_connections",
            ),
            (
                "kind = \"postgres\"\nurl = \"postgres://h/d\"\nconnect_timeout = \"0s\"",
                "datastore.connect_timeout",
            ),
            (
                "kind = \"postgres\"\nurl = \"postgres://h/d\"\nstatement_timeout = \"1ms\"",
                "datastore.statement_timeout",
            ),
            ("kind = \"postgres\"\nurl = \"postgres://h/d\"\nsslmode = \"always\"", "sslmode"),
            (
                "kind = \"postgres\"\nurl = \"postgres://h/d\"\nsslmode = \"disable\"\nca_file = \"/ca.pem\"",
                "datastore.ca_file",
            ),
            ("url = \"postgres://h/d\"", "datastore.url"),
            ("url_file = \"/x\"", "datastore.url_file"),
            ("sslmode = \"require\"", "datastore.sslmode"),
            ("pool_size = 3", "pool_size"),
        ];
        for (body, key) in cases {
            let e = parse(body).unwrap_err().to_string();
            assert!(e.contains(key), "{body:?} → {e}");
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let url = "postgres://ferrid:hunter2-s3cret@db/ferrid?password=also-s3cret";
        let c = parse(&format!("kind = \"postgres\"\nurl = \"{url}\"\n")).unwrap();
        for shown in [format!("{:?}", c.raw), format!("{c:?}"), format!("{:?}", c.raw.datastore)] {
            assert!(!shown.contains("hunter2") && !shown.contains("also-s3cret"), "{shown}");
        }
        let s = c.raw.datastore.postgres_settings().unwrap().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        // An invalid URL's error does not echo it either.
        let e = parse("kind = \"postgres\"\nurl = \"postgres://ferrid:hunter2@[bad/ferrid\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("datastore.url") && !e.contains("hunter2"), "{e}");
    }
}
