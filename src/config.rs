//! Configuration: where the connection string comes from, and the knobs.
//!
//! Every setting is looked up the way phobos looks up its own: first the
//! environment variable `PHOBOS_DSS_<key>`, then key `<key>` of section
//! `[dss]` in the ini file named by `PHOBOS_CFG_FILE` (default
//! `/etc/phobos.conf`).
//!
//! | key               | meaning                                            | default |
//! |-------------------|----------------------------------------------------|---------|
//! | `connect_string`  | libpq conninfo or URI (only for `dss_init`)        | none: `-EINVAL` |
//! | `pool_size`       | connections per handle (1..=1024)                  | 8 |
//! | `pool_timeout_ms` | longest wait for a free pooled connection          | 5000 |
//! | `call_timeout_ms` | longest a call may take, all included              | 10000 |
//!
//! The connection string is libpq's: it is handed to libpq as it is, so
//! every keyword, URI, `PG*` variable, service file and password file
//! works as with `psql`. It is checked with libpq's own parser
//! (`PQconninfoParse`) before anything is tried. The library adds only
//! what the user left unset: `application_name` `libdss` (as libpq's
//! `fallback_application_name`), `connect_timeout` 5 s per host and, on TCP,
//! `tcp_user_timeout` 5 s (both when set nowhere: conninfo, service file,
//! `PGCONNECT_TIMEOUT`).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::pq::ConnectParams;

pub const ENV_PREFIX: &str = "PHOBOS_DSS_";
pub const CFG_FILE_ENV: &str = "PHOBOS_CFG_FILE";
pub const DEFAULT_CFG_FILE: &str = "/etc/phobos.conf";

pub const DEFAULT_POOL_SIZE: u32 = 8;
pub const MAX_POOL_SIZE: u32 = 1024;
pub const DEFAULT_POOL_TIMEOUT: Duration = Duration::from_millis(5000);
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(10_000);
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// The application name of the library's sessions, unless the user names
/// them.
pub const APPLICATION_NAME: &str = "libdss";

/// Everything a handle needs to make connections.
#[derive(Clone)]
pub struct Settings {
    /// The connection string and defaults (never printed: it may hold a
    /// password).
    pub connect: ConnectParams,
    /// Maximum number of connections of one handle.
    pub pool_size: u32,
    /// Longest a call waits for a pooled connection.
    pub pool_timeout: Duration,
    /// Longest a call takes, from its start to its reply: waiting for a
    /// pooled connection, connecting, sending, waiting for the reply (for
    /// dss_lock_wait, each of its round trips).
    pub call_timeout: Duration,
}

impl Settings {
    /// Builds the settings from a conninfo string plus the knobs from the
    /// environment / ini file.
    pub fn new(conninfo: &str) -> Result<Settings> {
        let connect = parse_conninfo(conninfo)?;
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
        Ok(Settings {
            connect,
            pool_size,
            pool_timeout: milliseconds("pool_timeout_ms", DEFAULT_POOL_TIMEOUT)?,
            call_timeout: milliseconds("call_timeout_ms", DEFAULT_CALL_TIMEOUT)?,
        })
    }
}

/// A positive number of milliseconds from setting `key`, or `default`.
fn milliseconds(key: &str, default: Duration) -> Result<Duration> {
    match lookup(key)? {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Duration::from_millis(n)),
            _ => Err(Error::invalid(format!(
                "{key} must be a positive integer, got '{v}'"
            ))),
        },
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

/// Checks a conninfo (or URI) with libpq's parser, and the values libpq
/// itself would only refuse when connecting (so that they are `-EINVAL`
/// here, not a failed connection). Errors never quote the string when it
/// may hold a password.
pub fn parse_conninfo(conninfo: &str) -> Result<ConnectParams> {
    let set = crate::pq::parse_conninfo(conninfo).map_err(|m| {
        Error::invalid(format!(
            "invalid connection string: {}",
            without_secrets(&m, conninfo)
        ))
    })?;
    for (key, value) in &set {
        if let Some(why) = bad_value(key, value) {
            let shown = if key == "password" { "…" } else { value };
            return Err(Error::invalid(format!(
                "invalid connection string: {key} = '{shown}': {why}"
            )));
        }
    }
    let mut params = ConnectParams::new(conninfo, APPLICATION_NAME).map_err(Error::invalid)?;
    params.default_connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    params.default_tcp_user_timeout = DEFAULT_TCP_USER_TIMEOUT;
    Ok(params)
}

/// Why libpq would refuse `value` for `key` at connection time (libpq 15's
/// rules, unchanged since), if it would.
fn bad_value(key: &str, value: &str) -> Option<&'static str> {
    let integer = |v: &str| v.trim().parse::<i64>().is_ok();
    let one_of = |allowed: &[&str]| allowed.contains(&value);
    let ok = match key {
        "connect_timeout"
        | "keepalives"
        | "keepalives_idle"
        | "keepalives_interval"
        | "keepalives_count"
        | "tcp_user_timeout" => integer(value),
        "port" => value
            .split(',')
            .all(|p| p.is_empty() || p.trim().parse::<u16>().is_ok_and(|n| n > 0)),
        "sslmode" => one_of(&[
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ]),
        "gssencmode" | "channel_binding" => one_of(&["disable", "prefer", "require"]),
        "target_session_attrs" => one_of(&[
            "any",
            "read-write",
            "read-only",
            "primary",
            "standby",
            "prefer-standby",
        ]),
        _ => true,
    };
    (!ok).then_some(match key {
        "port" => "not a port number (1 to 65535, or a comma list of them)",
        "sslmode" => "one of disable, allow, prefer, require, verify-ca, verify-full",
        "gssencmode" | "channel_binding" => "one of disable, prefer, require",
        "target_session_attrs" => {
            "one of any, read-write, read-only, primary, standby, prefer-standby"
        }
        _ => "not an integer",
    })
}

/// libpq's parse error, with every quoted part hidden when the string may
/// hold a password (libpq quotes the text it could not parse, which may be
/// part of one).
fn without_secrets(message: &str, conninfo: &str) -> String {
    let lower = conninfo.to_ascii_lowercase();
    let may_hold_password = lower.contains("password")
        || ((lower.starts_with("postgres://") || lower.starts_with("postgresql://"))
            && conninfo.contains('@'));
    if !may_hold_password {
        return message.to_string();
    }
    let mut out = String::new();
    let mut quoted = false;
    for c in message.chars() {
        if c == '"' {
            if quoted {
                out.push('…');
            }
            quoted = !quoted;
            out.push(c);
        } else if !quoted {
            out.push(c);
        }
    }
    out
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
    fn conninfo_is_libpqs_and_bad_values_are_einval() {
        for good in [
            "host=/tmp port=5433 dbname=x",
            "dbname=x",
            "",
            "host=/tmp sslmode=require",
            "host=a,b port=1,2 target_session_attrs=read-write",
            "postgresql://u@localhost:5/db?sslmode=verify-full&connect_timeout=3",
            "service=mine",
            "host=/tmp port=",
        ] {
            assert!(parse_conninfo(good).is_ok(), "{good}");
        }
        for bad in [
            "host=/tmp port=notaport",
            "host=/tmp port=0",
            "host=/tmp nosuchkey=1",
            "host=/tmp sslmode=sometimes",
            "host=/tmp target_session_attrs=writable",
            "host=/tmp connect_timeout=soon",
            "host='unterminated",
            "postgresql://host:x/db",
            "host=/tmp\0",
        ] {
            let e = parse_conninfo(bad).unwrap_err();
            assert_eq!(e.errno(), -libc::EINVAL, "{bad}");
        }
    }

    #[test]
    fn conninfo_errors_never_echo_the_password() {
        for (conninfo, secret) in [
            ("host=/tmp password=s3cr3t port=bad", "s3cr3t"),
            ("host=/tmp password=top sec=ret", "sec"),
            ("host=/tmp password=a b", "b"),
            ("postgresql://u:pa%zzword@host/db", "pa%zz"),
        ] {
            let e = parse_conninfo(conninfo).unwrap_err();
            assert_eq!(e.errno(), -libc::EINVAL, "{conninfo}");
            assert!(!e.message.contains(secret), "{conninfo}: {}", e.message);
        }
        let e = parse_conninfo("host=/tmp password=s3cr3t port=bad").unwrap_err();
        assert!(
            e.message.contains("port"),
            "names the bad option: {}",
            e.message
        );
        let e = parse_conninfo("host=/tmp nosuchkey=1").unwrap_err();
        assert!(e.message.contains("nosuchkey"), "{}", e.message);
    }
}
