//! The key-value store, in safe Rust: buckets of keys holding byte values,
//! each with a version, optionally with a time-to-live on the database
//! clock, and writes that can be fenced by a lock token. Arguments arrive
//! checked for shape (see `ffi/kv.rs`); each call is one prepared statement
//! (see `sql/kv.rs`), so one round trip and one transaction.
//!
//! Consistency is PostgreSQL's, on a single primary: every call is atomic
//! and durable when it returns; reads see every write committed before they
//! started (read committed); there are no multi-call transactions.

use crate::error::{Error, Kind, Result};
use crate::handle::Handle;
use crate::lock::ttl_param;
use crate::sql::kv as q;

/// Longest bucket name or key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Largest value, in bytes (64 MiB).
pub const MAX_VALUE_LEN: usize = 64 << 20;
/// Most keys in one batch or one page of keys.
pub const MAX_BATCH: usize = crate::batch::MAX_BATCH;

fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::new(
            Kind::TooBig,
            format!(
                "value of {} bytes is larger than {MAX_VALUE_LEN} (64 MiB)",
                value.len()
            ),
        ));
    }
    Ok(())
}

fn not_found(bucket: &str, key: &str) -> Error {
    Error::new(
        Kind::NotFound,
        format!("key '{key}' does not exist in bucket '{bucket}'"),
    )
}

/// Writes `value` (ttl 0: never expires); returns the new version.
pub fn set(h: &Handle, bucket: &str, key: &str, value: &[u8], ttl_ms: u64) -> Result<u64> {
    let ttl = ttl_param(ttl_ms)?;
    check_value(value)?;
    h.run("kv_set", |c| {
        c.query_one(&q::SET, &[&bucket, &key, &value, &ttl])
            .map(|row| row.get::<i64>(0) as u64)
    })
}

/// The value and version of a live key; `NotFound` otherwise.
pub fn get(h: &Handle, bucket: &str, key: &str) -> Result<(Vec<u8>, u64)> {
    let row = h.run("kv_get", |c| c.query_opt(&q::GET, &[&bucket, &key]))?;
    match row {
        Some(row) => Ok((row.get(0), row.get::<i64>(1) as u64)),
        None => Err(not_found(bucket, key)),
    }
}

/// Whether a live key exists.
pub fn exists(h: &Handle, bucket: &str, key: &str) -> Result<bool> {
    h.run("kv_exists", |c| {
        c.query_one(&q::EXISTS, &[&bucket, &key])
            .map(|row| row.get(0))
    })
}

/// Removes a key; no error if it is absent.
pub fn delete(h: &Handle, bucket: &str, key: &str) -> Result<()> {
    h.run("kv_delete", |c| {
        c.query(&q::DELETE, &[&bucket, &key]).map(|_| ())
    })
}

/// A string greater than every key (at most MAX_KEY_LEN bytes) starting
/// with `prefix`, and than no other key: the prefix with its last character
/// replaced by the next one (byte order is code point order in UTF-8); for a
/// prefix made only of U+10FFFF, which has no next character, more U+10FFFF
/// than a key can hold.
fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return chars.into_iter().collect();
        }
    }
    "\u{10FFFF}".repeat(MAX_KEY_LEN / 4 + 1)
}

/// One page of live keys of `bucket` starting with `prefix` ("" for all),
/// after `cursor` (None: from the start), at most `limit`, in byte order;
/// with the cursor of the next page (None at the end). Keyset pagination:
/// nothing is held open between pages, and keys inserted meanwhile after the
/// cursor appear in later pages.
pub fn list(
    h: &Handle,
    bucket: &str,
    prefix: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<String>, Option<String>)> {
    if limit == 0 || limit > MAX_BATCH {
        return Err(Error::invalid(format!(
            "limit is {limit}: it must be 1 to {MAX_BATCH}"
        )));
    }
    let after = cursor.unwrap_or("");
    let fetch = limit as i64 + 1;
    let rows = h.run("kv_list_keys", |c| {
        if prefix.is_empty() {
            c.query(&q::LIST, &[&bucket, &after, &fetch])
        } else {
            let end = prefix_end(prefix);
            c.query(&q::LIST_PREFIX, &[&bucket, &after, &fetch, &prefix, &end])
        }
    })?;
    let mut keys: Vec<String> = rows.iter().map(|r| r.get::<String>(0)).collect();
    let next = if keys.len() > limit {
        keys.truncate(limit);
        keys.last().cloned()
    } else {
        None
    };
    Ok((keys, next))
}

/// Adds `delta` to the integer stored as decimal text (absent: 0); returns
/// the result. A value that is not a decimal integer, or an overflow, is
/// `InvalidArgument`.
pub fn increment(h: &Handle, bucket: &str, key: &str, delta: i64) -> Result<i64> {
    h.run("kv_increment", |c| {
        c.query_one(&q::INCREMENT, &[&bucket, &key, &delta])
            .map(|row| row.get(0))
    })
}

/// Writes `value` only if the key's version is `expected` (0: the key must
/// not exist); returns the new version, or `Again` on a mismatch.
pub fn cas(h: &Handle, bucket: &str, key: &str, expected: u64, value: &[u8]) -> Result<u64> {
    check_value(value)?;
    let Ok(expected_param) = i64::try_from(expected) else {
        return Err(mismatch(bucket, key, expected));
    };
    let version = h.run("kv_cas", |c| {
        c.query_one(&q::CAS, &[&bucket, &key, &expected_param, &value])
            .map(|row| row.get::<Option<i64>>(0))
    })?;
    version
        .map(|v| v as u64)
        .ok_or_else(|| mismatch(bucket, key, expected))
}

fn mismatch(bucket: &str, key: &str, expected: u64) -> Error {
    let what = if expected == 0 {
        "exists".to_string()
    } else {
        format!("is not at version {expected}")
    };
    Error::new(
        Kind::Again,
        format!("key '{key}' of bucket '{bucket}' {what}: nothing written"),
    )
}

fn check_keys(keys: &[&str]) -> Result<()> {
    crate::batch::distinct(keys, "key")
}

/// The values of `keys` (None where absent), in the same order. A key may
/// appear more than once.
pub fn get_many(h: &Handle, bucket: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
    if keys.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "{} keys in one batch (at most {MAX_BATCH})",
            keys.len()
        )));
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let rows = h.run("kv_get_many", |c| c.query(&q::GET_MANY, &[&bucket, &keys]))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Writes every (key, value), without expiry, all or nothing.
pub fn set_many(h: &Handle, bucket: &str, keys: &[&str], values: &[&[u8]]) -> Result<()> {
    check_keys(keys)?;
    if keys.len() != values.len() {
        return Err(Error::invalid("as many values as keys are needed"));
    }
    values.iter().try_for_each(|v| check_value(v))?;
    if keys.is_empty() {
        return Ok(());
    }
    h.run("kv_set_many", |c| {
        c.query(&q::SET_MANY, &[&bucket, &keys, &values])
            .map(|_| ())
    })
}

/// Removes every key (absent ones are no error).
pub fn delete_many(h: &Handle, bucket: &str, keys: &[&str]) -> Result<()> {
    check_keys(keys)?;
    if keys.is_empty() {
        return Ok(());
    }
    h.run("kv_delete_many", |c| {
        c.query(&q::DELETE_MANY, &[&bucket, &keys]).map(|_| ())
    })
}

/// Writes `value` (without expiry) only if `lock_id` is held, live, with
/// `token`; `Stale` otherwise, and nothing is written.
pub fn set_fenced(
    h: &Handle,
    bucket: &str,
    key: &str,
    value: &[u8],
    lock_id: &str,
    token: u64,
) -> Result<u64> {
    check_value(value)?;
    let stale = || {
        Error::new(
            Kind::Stale,
            format!("token {token} does not hold lock '{lock_id}': key '{key}' not written"),
        )
    };
    let Ok(token_param) = i64::try_from(token) else {
        return Err(stale());
    };
    let (held, version) = h.run("kv_set_fenced", |c| {
        c.query_one(
            &q::SET_FENCED,
            &[&bucket, &key, &value, &lock_id, &token_param],
        )
        .map(|row| (row.get::<bool>(0), row.get::<Option<i64>>(1)))
    })?;
    match version {
        Some(v) if held => Ok(v as u64),
        _ => Err(stale()),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_string_in_byte_order() {
        assert_eq!(prefix_end("abc"), "abd");
        assert_eq!(prefix_end("a\u{D7FF}"), "a\u{E000}");
        assert_eq!(prefix_end("a\u{10FFFF}"), "b");
        let p = "é";
        let end = prefix_end(p);
        assert!("é\u{10FFFF}zzz".as_bytes() < end.as_bytes());
        assert!(p.as_bytes() < end.as_bytes());
        // Only U+10FFFF: beyond any key of at most 1024 bytes.
        let end = prefix_end("\u{10FFFF}");
        let longest = "\u{10FFFF}".repeat(256);
        assert!(longest.as_bytes() < end.as_bytes());
        assert!("\u{10FFFF}".as_bytes() < end.as_bytes());
    }
}
