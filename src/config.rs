//! Configuration: where the connection string comes from, and the pool knobs.
//!
//! Every setting is looked up the way phobos looks up its own: first the
//! environment variable `PHOBOS_DSS_<key>`, then key `<key>` of section
//! `[dss]` in the ini file named by `PHOBOS_CFG_FILE` (default
//! `/etc/phobos.conf`).
//!
//! | key               | meaning                                            | default |
//! |-------------------|----------------------------------------------------|---------|
//! | `connect_string`  | libpq-style conninfo (only for `dss_init`)         | none: `-EINVAL` |
//! | `pool_size`       | connections per handle (1..=1024)                  | 8 |
//! | `pool_timeout_ms` | longest wait for a free pooled connection          | 5000 |
//!
//! In the conninfo, `connect_timeout` defaults to 5 seconds and
//! `application_name` to `libdss`.

use std::path::PathBuf;
use std::time::Duration;

use postgres::config::SslMode;

use crate::error::{Error, Result};

pub const ENV_PREFIX: &str = "PHOBOS_DSS_";
pub const CFG_FILE_ENV: &str = "PHOBOS_CFG_FILE";
pub const DEFAULT_CFG_FILE: &str = "/etc/phobos.conf";

pub const DEFAULT_POOL_SIZE: u32 = 8;
pub const MAX_POOL_SIZE: u32 = 1024;
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_millis(5000);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a handle needs to make connections.
#[derive(Clone)]
pub struct Settings {
    /// Parsed connection parameters (never printed: they hold the password).
    pub pg: postgres::Config,
    /// Maximum number of connections of one handle.
    pub pool_size: u32,
    /// Longest a call waits for a pooled connection.
    pub pool_timeout: Duration,
}

impl Settings {
    /// Builds the settings from a conninfo string plus the pool keys from the
    /// environment / ini file.
    pub fn new(conninfo: &str) -> Result<Settings> {
        let pg = parse_conninfo(conninfo)?;
        let pool_size = match lookup("pool_size")? {
            None => DEFAULT_POOL_SIZE,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_POOL_SIZE).contains(&n) => n,
                _ => {
                    return Err(Error::invalid(format!(
                        "pool_size must be an integer from 1 to {MAX_POOL_SIZE}, got '{v}'"
                    )));
                }
            },
        };
        let pool_timeout = match lookup("pool_timeout_ms")? {
            None => DEFAULT_POOL_TIMEOUT,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Duration::from_millis(n),
                _ => {
                    return Err(Error::invalid(format!(
                        "pool_timeout_ms must be a positive integer, got '{v}'"
                    )));
                }
            },
        };
        Ok(Settings {
            pg,
            pool_size,
            pool_timeout,
        })
    }
}

/// The connection string for `dss_init`: `PHOBOS_DSS_connect_string`, else
/// `connect_string` in `[dss]` of the config file.
pub fn connect_string_from_environment() -> Result<String> {
    match lookup("connect_string")? {
        Some(s) => Ok(s),
        None => Err(Error::invalid(format!(
            "no connection string: set {ENV_PREFIX}connect_string, or connect_string in \
             section [dss] of {} (named by {CFG_FILE_ENV})",
            config_file().display()
        ))),
    }
}

fn config_file() -> PathBuf {
    match std::env::var_os(CFG_FILE_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_CFG_FILE),
    }
}

/// Environment first (an empty value counts as unset), then the ini file.
/// A missing file is "not set"; an unreadable one (permissions, not UTF-8)
/// is an error, not a silent default.
fn lookup(key: &str) -> Result<Option<String>> {
    if let Some(v) = std::env::var_os(format!("{ENV_PREFIX}{key}")).filter(|v| !v.is_empty()) {
        return match v.into_string() {
            Ok(s) => Ok(Some(s)),
            Err(_) => Err(Error::invalid(format!(
                "{ENV_PREFIX}{key} is not valid UTF-8"
            ))),
        };
    }
    let path = config_file();
    match std::fs::read(&path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(ini_value(&text, "dss", key)),
            Err(_) => Err(Error::invalid(format!(
                "config file {} is not valid UTF-8",
                path.display()
            ))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::invalid(format!(
            "cannot read config file {}: {e}",
            path.display()
        ))),
    }
}

/// Value of `key` in `[section]` of an ini text (phobos's format: `key = value`,
/// `#` or `;` comment lines, section and key names case-sensitive). The last
/// occurrence wins. Values are taken whole (a conninfo may contain `#`).
pub fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            in_section = rest.strip_suffix(']').map(str::trim) == Some(section);
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// Parses a libpq-style conninfo (or URI) and applies our defaults. Errors
/// never quote the string: it may hold a password.
pub fn parse_conninfo(conninfo: &str) -> Result<postgres::Config> {
    let mut pg: postgres::Config = conninfo
        .parse()
        .map_err(|e: postgres::Error| Error::invalid(crate::error::with_causes(&e)))?;
    if pg.get_hosts().is_empty() {
        return Err(Error::invalid(
            "invalid connection string: no host (give host=HOST or host=/socket/dir)",
        ));
    }
    match pg.get_ssl_mode() {
        SslMode::Require => {
            return Err(Error::invalid(
                "sslmode=require: this build of libdss has no TLS support; \
                 use a Unix socket or a trusted network",
            ));
        }
        // "prefer" (the default) would silently fall back to clear text with
        // no TLS connector: say what happens, and skip the SSLRequest.
        _ => {
            pg.ssl_mode(SslMode::Disable);
        }
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if pg.get_tcp_user_timeout().is_none() {
        // Unacknowledged data on a dead link fails the call instead of
        // waiting for the kernel's default (about 15 minutes).
        pg.tcp_user_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if pg.get_application_name().is_none() {
        pg.application_name("libdss");
    }
    Ok(pg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_reads_the_dss_section_only() {
        let text = "\
# comment
[other]
connect_string = wrong
[dss]
; comment
connect_string = host=/tmp port=5 password=a#b
pool_size=3
[tail]
pool_size = 9
";
        assert_eq!(
            ini_value(text, "dss", "connect_string").as_deref(),
            Some("host=/tmp port=5 password=a#b")
        );
        assert_eq!(ini_value(text, "dss", "pool_size").as_deref(), Some("3"));
        assert_eq!(ini_value(text, "dss", "missing"), None);
        assert_eq!(ini_value(text, "nosuch", "pool_size"), None);
    }

    #[test]
    fn conninfo_defaults_and_rejections() {
        let pg = parse_conninfo("host=/tmp port=5433 dbname=x").unwrap();
        assert_eq!(pg.get_connect_timeout(), Some(&DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(pg.get_application_name(), Some("libdss"));
        assert!(matches!(pg.get_ssl_mode(), SslMode::Disable));

        let pg = parse_conninfo("host=/tmp connect_timeout=2 application_name=me").unwrap();
        assert_eq!(pg.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(pg.get_application_name(), Some("me"));

        for bad in [
            "host=/tmp port=notaport",
            "host=/tmp nosuchkey=1",
            "dbname=x",
            "host=/tmp sslmode=require",
            "host='unterminated",
        ] {
            let e = parse_conninfo(bad).unwrap_err();
            assert_eq!(e.errno(), -libc::EINVAL, "{bad}");
        }
    }

    #[test]
    fn conninfo_errors_never_echo_the_password() {
        let e = parse_conninfo("host=/tmp password=s3cr3t port=bad").unwrap_err();
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        assert!(
            e.message.contains("port"),
            "names the bad option: {}",
            e.message
        );
    }
}
