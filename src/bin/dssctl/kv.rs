//! `dssctl kv`: read and write the key-value store from the shell.
//!
//! Three steps: clap parses ([`KvCommand`], bucket and key lengths checked
//! as they are parsed), [`prepare`] reads the value and checks its size
//! ([`Request`]; still no connection, so every usage error exits 2 before
//! the database is reached), then [`run`] makes the calls.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use clap::builder::{RangedU64ValueParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{ArgGroup, Subcommand};
use dss::error::Kind;
use dss::handle::Handle;
use dss::kv::{MAX_BATCH, MAX_KEY_LEN, MAX_VALUE_LEN};
use dss::lock::MAX_TTL_MS;
use serde_json::json;

use crate::{Failure, output};

/// Page size of `kv list` unless --limit says otherwise.
const DEFAULT_PAGE: usize = 1000;

const GET_HELP: &str = "\
Print the value of a live key. Exit 3 if the key is absent or expired.

Output:
  default  the value as text if it is valid UTF-8 without control characters
           other than newline and tab, followed by a newline unless it ends
           with one; otherwise the bytes in lowercase hex on one line (decode
           with `xxd -r -p`), and a note on stderr.
  --raw    exactly the bytes of the value, nothing added.
  --json   one object, always with the same keys (printed in this order):
             \"bucket\":       string
             \"key\":          string
             \"size\":         integer, bytes
             \"value_base64\": string, the exact bytes (RFC 4648 standard
                             alphabet, padded); always present
             \"value_utf8\":   string if the value is valid UTF-8 (control
                             characters included, JSON-escaped), else null
             \"version\":      integer";

const SET_HELP: &str = "\
Write a value (a new version, replacing any previous value and expiry) and
print the version written: versions of a key only increase.

The value comes from exactly one source: the VALUE argument (any bytes but
NUL; put it after `--` if it starts with '-'), --file PATH, or --stdin.
A value larger than 64 MiB (67108864 bytes), the store's limit, is refused
with exit 2 before connecting; so is an unreadable --file or stdin.";

const LIST_HELP: &str = "\
List the live keys of a bucket, one per line, in byte order; control
characters in keys are shown escaped (\\n, \\u{1b}): --json gives them
exactly, as a JSON array of strings.

Every key is listed: dssctl pages through the bucket with --limit keys per
round trip until the end (keyset pagination, nothing held open between
pages: a key written during the listing may or may not appear). --limit only
sets the page size, never how many keys are printed; --all names that
default explicitly.";

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print the value of a key (exit 3 if absent or expired)
    #[command(long_about = GET_HELP)]
    Get {
        /// Bucket (non-empty UTF-8, at most 1024 bytes)
        #[arg(value_parser = NameParser)]
        bucket: String,
        /// Key (non-empty UTF-8, at most 1024 bytes)
        #[arg(value_parser = NameParser)]
        key: String,
        /// Machine-readable output (one object, see above)
        #[arg(long, conflicts_with = "raw")]
        json: bool,
        /// Write the exact bytes of the value, nothing added
        #[arg(long)]
        raw: bool,
    },
    /// Write a value; prints the new version
    #[command(
        long_about = SET_HELP,
        override_usage = "dssctl kv set [OPTIONS] <BUCKET> <KEY> <VALUE | --file <PATH> | --stdin>",
        group(ArgGroup::new("source").required(true).args(["value", "file", "stdin"]))
    )]
    Set {
        /// Bucket (non-empty UTF-8, at most 1024 bytes)
        #[arg(value_parser = NameParser)]
        bucket: String,
        /// Key (non-empty UTF-8, at most 1024 bytes)
        #[arg(value_parser = NameParser)]
        key: String,
        /// The value (or use --file or --stdin)
        #[arg(value_parser = clap::value_parser!(OsString))]
        value: Option<OsString>,
        /// Read the value from a file (any bytes)
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Read the value from standard input (any bytes)
        #[arg(long)]
        stdin: bool,
        /// Expire the key after N ms, on the database clock (0: never)
        #[arg(long, value_name = "N", default_value_t = 0,
              value_parser = clap::value_parser!(u64).range(0..=MAX_TTL_MS))]
        ttl_ms: u64,
    },
    /// Remove a key (exit 0 if it was absent too); prints nothing
    Del {
        /// Bucket (non-empty UTF-8, at most 1024 bytes)
        #[arg(value_parser = NameParser)]
        bucket: String,
        /// Key (non-empty UTF-8, at most 1024 bytes)
        #[arg(value_parser = NameParser)]
        key: String,
    },
    /// List the keys of a bucket, every page
    #[command(long_about = LIST_HELP)]
    List {
        /// Bucket (non-empty UTF-8, at most 1024 bytes)
        #[arg(value_parser = NameParser)]
        bucket: String,
        /// Only keys starting with P (byte-wise; not a pattern)
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
        /// Keys fetched per round trip (page size, not a cap)
        #[arg(long, value_name = "N", default_value_t = DEFAULT_PAGE,
              value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH as u64))]
        limit: usize,
        /// Page until the end (the default, accepted for explicitness)
        #[arg(long)]
        all: bool,
        /// Machine-readable output (an array of key strings)
        #[arg(long)]
        json: bool,
    },
}

/// A bucket name or key: non-empty, at most MAX_KEY_LEN bytes.
fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.len() > MAX_KEY_LEN {
        return Err(format!(
            "is {} bytes long: at most {MAX_KEY_LEN} bytes",
            s.len()
        ));
    }
    Ok(())
}

/// Parses BUCKET and KEY with [`check_name`]; the message names the
/// argument without echoing a value that may be very long.
#[derive(Clone)]
struct NameParser;

impl TypedValueParser for NameParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let name = arg.map_or("BUCKET or KEY".to_string(), |a| {
            a.get_id().as_str().to_uppercase()
        });
        let s = value.to_str().ok_or_else(|| {
            cmd.clone()
                .error(ErrorKind::InvalidUtf8, format!("{name} is not valid UTF-8"))
        })?;
        check_name(s).map_err(|msg| {
            cmd.clone()
                .error(ErrorKind::InvalidValue, format!("{name} {msg}"))
        })?;
        Ok(s.to_string())
    }
}

/// How `kv get` prints.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GetFormat {
    Auto,
    Raw,
    Json,
}

/// A kv command checked and with its value in hand: all that is left is
/// the database.
pub enum Request {
    Get {
        bucket: String,
        key: String,
        format: GetFormat,
    },
    Set {
        bucket: String,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    },
    Del {
        bucket: String,
        key: String,
    },
    List {
        bucket: String,
        prefix: String,
        limit: usize,
        json: bool,
    },
}

/// Reads the value of `kv set` and checks its size; `Err` is a usage
/// error (exit 2).
pub fn prepare(op: KvCommand) -> Result<Request, String> {
    Ok(match op {
        KvCommand::Get {
            bucket,
            key,
            json,
            raw,
        } => Request::Get {
            bucket,
            key,
            format: match (json, raw) {
                (true, _) => GetFormat::Json,
                (_, true) => GetFormat::Raw,
                _ => GetFormat::Auto,
            },
        },
        KvCommand::Set {
            bucket,
            key,
            value,
            file,
            stdin,
            ttl_ms,
        } => {
            let value = match (value, file) {
                (Some(v), _) => v.into_vec(),
                (None, Some(path)) => {
                    let f = std::fs::File::open(&path)
                        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
                    read_limited(f, &format!("'{}'", path.display()))?
                }
                (None, None) => {
                    debug_assert!(stdin, "clap requires one source");
                    read_limited(std::io::stdin().lock(), "standard input")?
                }
            };
            check_size(value.len())?;
            Request::Set {
                bucket,
                key,
                value,
                ttl_ms,
            }
        }
        KvCommand::Del { bucket, key } => Request::Del { bucket, key },
        KvCommand::List {
            bucket,
            prefix,
            limit,
            json,
            all: _,
        } => Request::List {
            bucket,
            prefix,
            limit,
            json,
        },
    })
}

/// Everything `r` gives, but never more than one byte over the limit (so a
/// huge file or an endless pipe is not read to the end).
fn read_limited(r: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    r.take(MAX_VALUE_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    Ok(buf)
}

fn check_size(len: usize) -> Result<(), String> {
    if len > MAX_VALUE_LEN {
        return Err(format!(
            "the value is larger than {MAX_VALUE_LEN} bytes (64 MiB), the most the store \
             accepts (EFBIG): nothing written"
        ));
    }
    Ok(())
}

/// Runs a prepared request; returns what goes to stdout.
pub fn run(h: &Handle, req: Request) -> Result<Vec<u8>, Failure> {
    match req {
        Request::Get {
            bucket,
            key,
            format,
        } => {
            let (value, version) = dss::kv::get(h, &bucket, &key).map_err(|e| {
                if e.kind == Kind::NotFound {
                    Failure::NotFound(format!(
                        "no key '{}' in bucket '{}' (absent, or expired)",
                        output::text(&key),
                        output::text(&bucket)
                    ))
                } else {
                    Failure::Db(e)
                }
            })?;
            Ok(match format {
                GetFormat::Raw => value,
                GetFormat::Json => {
                    output::json_text(&value_json(&bucket, &key, version, &value)).into_bytes()
                }
                GetFormat::Auto => match printable(&value) {
                    Some(text) => {
                        let mut out = text.as_bytes().to_vec();
                        if !text.ends_with('\n') {
                            out.push(b'\n');
                        }
                        out
                    }
                    None => {
                        eprintln!(
                            "dssctl: note: the value ({} bytes) is not printable UTF-8 text: \
                             shown as hex (--raw writes the bytes)",
                            value.len()
                        );
                        let mut out = hex(&value).into_bytes();
                        out.push(b'\n');
                        out
                    }
                },
            })
        }
        Request::Set {
            bucket,
            key,
            value,
            ttl_ms,
        } => {
            let version = dss::kv::set(h, &bucket, &key, &value, ttl_ms)?;
            Ok(format!("{version}\n").into_bytes())
        }
        Request::Del { bucket, key } => {
            dss::kv::delete(h, &bucket, &key)?;
            Ok(Vec::new())
        }
        Request::List {
            bucket,
            prefix,
            limit,
            json,
        } => {
            let mut keys = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let (page, next) = dss::kv::list(h, &bucket, &prefix, cursor.as_deref(), limit)?;
                keys.extend(page);
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            Ok(if json {
                output::json_text(&json!(keys)).into_bytes()
            } else {
                keys.iter()
                    .flat_map(|k| {
                        let mut line = output::text(k).into_bytes();
                        line.push(b'\n');
                        line
                    })
                    .collect()
            })
        }
    }
}

/// The value as text if it is UTF-8 without control characters other than
/// newline and tab.
pub fn printable(value: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(value).ok()?;
    let clean = !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
    clean.then_some(s)
}

/// The `--json` object of `kv get`.
pub fn value_json(bucket: &str, key: &str, version: u64, value: &[u8]) -> serde_json::Value {
    // In key order, which is also serde_json's (sorted) order.
    json!({
        "bucket": bucket,
        "key": key,
        "size": value.len(),
        "value_base64": base64(value),
        "value_utf8": std::str::from_utf8(value).ok(),
        "version": version,
    })
}

/// Lowercase hex, no separators.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Base64, standard alphabet, padded (RFC 4648 section 4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        assert_eq!(base64(&[0, 0xff, 0xfe, 0, 0x80]), "AP/+AIA=");
    }

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0, 0x0a, 0xff, 0x10]), "000aff10");
    }

    #[test]
    fn printable_text() {
        assert_eq!(printable(b"a b\tc\nd\n"), Some("a b\tc\nd\n"));
        assert_eq!(printable("caf\u{e9}".as_bytes()), Some("café"));
        assert_eq!(printable(b""), Some(""));
        assert_eq!(printable(b"a\0b"), None, "NUL");
        assert_eq!(printable(b"a\rb"), None, "carriage return");
        assert_eq!(printable(b"\x1b[31m"), None, "escape");
        assert_eq!(printable(b"\x7f"), None, "DEL");
        assert_eq!(printable("\u{85}".as_bytes()), None, "C1 control");
        assert_eq!(printable(b"caf\xe9"), None, "latin-1, not UTF-8");
    }

    #[test]
    fn names_are_bounded_in_bytes() {
        assert!(check_name("").is_err());
        assert!(check_name(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(check_name(&"é".repeat(MAX_KEY_LEN / 2)).is_ok());
        assert!(check_name(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        // 513 two-byte characters: 1026 bytes.
        assert!(check_name(&"é".repeat(MAX_KEY_LEN / 2 + 1)).is_err());
    }

    #[test]
    fn sizes() {
        assert!(check_size(MAX_VALUE_LEN).is_ok());
        let err = check_size(MAX_VALUE_LEN + 1).unwrap_err();
        assert!(err.contains("64 MiB") && err.contains("EFBIG"), "{err}");
        let big = std::io::repeat(7).take(2 * MAX_VALUE_LEN as u64);
        assert_eq!(
            read_limited(big, "x").unwrap().len(),
            MAX_VALUE_LEN + 1,
            "stops one byte past the limit"
        );
    }

    #[test]
    fn get_json_shape() {
        let v = value_json("b", "k", 7, b"\0\xff");
        assert_eq!(
            v,
            json!({"bucket": "b", "key": "k", "version": 7, "size": 2,
                   "value_utf8": null, "value_base64": "AP8="})
        );
        let v = value_json("b", "k", 1, b"hi\n");
        assert_eq!(v["value_utf8"], "hi\n");
        assert_eq!(v["value_base64"], "aGkK");
    }
}
