//! How dssctl prints: timestamps (RFC 3339, UTC), durations, aligned
//! tables and the JSON objects of `--json`.
//!
//! The JSON keys are a stable interface (keys are only ever added):
//! - a lock hold (`list`, `clean --dry-run`, `status` of an exclusive
//!   lock) is `{id, owner, token, locked_at, locked_at_us, refreshed_at,
//!   refreshed_at_us, ttl_ms, expires_in_ms, expired, mode}`, `mode` one of
//!   "exclusive", "shared" (one object per shared holder) and, in `clean
//!   --dry-run` only, "semaphore";
//! - `status` of a lock held shared is `{id, mode: "shared", holders}`,
//!   each holder `{owner, token, locked_at, locked_at_us, expires_in_ms}`;
//! - a semaphore hold (`sem list`) is `{id, capacity, owner, permits,
//!   token, locked_at, locked_at_us, refreshed_at, refreshed_at_us, ttl_ms,
//!   expires_in_ms, expired}`;
//! - `sem status` is `{id, capacity, held, holders}`, each holder `{owner,
//!   permits, token, locked_at, locked_at_us, expires_in_ms}`;
//! - an event is `{seq, at, at_us, event, owner, token, actor}`.
//!
//! Timestamps are given twice: an RFC 3339 UTC string (microseconds) and
//! the Unix epoch in microseconds. `expires_in_ms` is null for a hold that
//! never expires, 0 for an expired lease; `actor` is null when the owner
//! acted itself.

use std::time::{SystemTime, UNIX_EPOCH};

use dss::lock::{Event, Info, Listed};
use dss::shared::{Holder, MODE_EXCLUSIVE, MODE_SEMAPHORE, MODE_SHARED, SemListed};
use serde_json::{Value, json};

/// Microseconds since the Unix epoch (negative before it).
pub fn epoch_us(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}

/// (year, month, day) of the proleptic Gregorian calendar for a day count
/// since 1970-01-01 (H. Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 in UTC with `digits` (3 or 6) fractional digits, e.g.
/// `2026-05-01T12:34:56.789Z`.
pub fn rfc3339(us: i64, digits: u32) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let frac = match digits {
        3 => format!("{:03}", frac / 1000),
        _ => format!("{frac:06}"),
    };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac}Z")
}

/// Table form of a timestamp: milliseconds.
pub fn time_ms(t: SystemTime) -> String {
    rfc3339(epoch_us(t), 3)
}

/// JSON form of a timestamp: microseconds.
pub fn time_us(t: SystemTime) -> String {
    rfc3339(epoch_us(t), 6)
}

/// A duration for people: `12.3s`, `4m05s`, `2h03m04s`, `3d04h05m`
/// (truncated, never rounded up).
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..60_000 => format!("{s}.{}s", ms % 1000 / 100),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60),
        _ => format!(
            "{}d{:02}h{:02}m",
            s / 86_400,
            s % 86_400 / 3600,
            s % 3600 / 60
        ),
    }
}

/// TTL column: `-` for a lock without lease.
pub fn ttl(info: &Info) -> String {
    if info.ttl_ms == 0 {
        "-".to_string()
    } else {
        duration(info.ttl_ms)
    }
}

/// EXPIRES_IN column: `never`, `expired`, or the time left.
pub fn expires_in(info: &Info, expired: bool) -> String {
    if expired {
        "expired".to_string()
    } else if info.expires_in_ms < 0 {
        "never".to_string()
    } else {
        duration(info.expires_in_ms as u64)
    }
}

/// Lease left of a live holder: `never` or the time left.
pub fn holder_expires_in(h: &Holder) -> String {
    if h.expires_in_ms < 0 {
        "never".to_string()
    } else {
        duration(h.expires_in_ms as u64)
    }
}

/// The MODE column and the JSON `mode`: `exclusive`, `shared`, `semaphore`.
pub fn mode_name(mode: i32) -> String {
    match mode {
        MODE_EXCLUSIVE => "exclusive".to_string(),
        MODE_SHARED => "shared".to_string(),
        MODE_SEMAPHORE => "semaphore".to_string(),
        other => format!("mode {other}"),
    }
}

/// Ids and owners are any UTF-8: control characters (newlines, escapes)
/// are shown escaped so that they cannot break the table or the terminal.
pub fn text(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// An aligned table: a header line and one line per row, columns
/// separated by two spaces; the last column is not padded. Widths count
/// characters (wide characters may misalign, nothing is cut).
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|(h, _)| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len() - 1;
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                line.push_str("  ");
            }
            match headers[i].1 {
                Align::Right => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                }
                Align::Left => {
                    line.push_str(cell);
                    if i != last {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table of `list` and `clean --dry-run`: one row per hold (a lock
/// held shared has one row per holder); MODE is last so that the columns
/// before it keep their places.
pub fn lock_table(locks: &[Listed]) -> String {
    let rows: Vec<Vec<String>> = locks
        .iter()
        .map(|l| {
            vec![
                text(&l.id),
                text(&l.info.owner),
                l.info.token.to_string(),
                time_ms(l.info.locked_at),
                time_ms(l.info.refreshed_at),
                ttl(&l.info),
                expires_in(&l.info, l.expired),
                mode_name(l.mode),
            ]
        })
        .collect();
    table(
        &[
            ("ID", Align::Left),
            ("OWNER", Align::Left),
            ("TOKEN", Align::Right),
            ("LOCKED_AT", Align::Left),
            ("REFRESHED_AT", Align::Left),
            ("TTL", Align::Right),
            ("EXPIRES_IN", Align::Right),
            ("MODE", Align::Left),
        ],
        &rows,
    )
}

/// A semaphore hold as a row of [`lock_table`] (mode `semaphore`), for
/// `clean --dry-run`.
pub fn sem_as_listed(s: &SemListed) -> Listed {
    Listed {
        id: s.id.clone(),
        info: Info {
            owner: s.owner.clone(),
            locked_at: s.locked_at,
            refreshed_at: s.refreshed_at,
            ttl_ms: s.ttl_ms,
            expires_in_ms: s.expires_in_ms,
            token: s.token,
        },
        expired: s.expired,
        mode: MODE_SEMAPHORE,
    }
}

/// The key/value lines of the blocks of `status` and `sem status`.
fn block(lines: &[(&str, String)]) -> String {
    lines
        .iter()
        .map(|(k, v)| format!("{:<13} {v}\n", format!("{k}:")))
        .collect()
}

/// A table under a block, indented by two spaces.
fn indented(table: &str) -> String {
    table.lines().map(|l| format!("  {l}\n")).collect()
}

/// The table of live holders under a `status` block; with `permits`, a
/// PERMITS column after the owner (semaphores).
fn holders_table(holders: &[Holder], permits: bool) -> String {
    let rows: Vec<Vec<String>> = holders
        .iter()
        .map(|h| {
            let mut row = vec![text(&h.owner)];
            if permits {
                row.push(h.permits.to_string());
            }
            row.extend([
                h.token.to_string(),
                time_ms(h.locked_at),
                holder_expires_in(h),
            ]);
            row
        })
        .collect();
    let mut columns = vec![("OWNER", Align::Left)];
    if permits {
        columns.push(("PERMITS", Align::Right));
    }
    columns.extend([
        ("TOKEN", Align::Right),
        ("LOCKED_AT", Align::Left),
        ("EXPIRES_IN", Align::Right),
    ]);
    indented(&table(&columns, &rows))
}

/// `status` of a lock held shared: the id, then one row per live holder.
pub fn shared_block(id: &str, holders: &[Holder]) -> String {
    block(&[
        ("id", text(id)),
        ("mode", mode_name(MODE_SHARED)),
        ("holders", holders.len().to_string()),
    ]) + &holders_table(holders, false)
}

/// The table of `sem list`: one row per holder, expired leases included.
pub fn sem_table(holds: &[SemListed]) -> String {
    let rows: Vec<Vec<String>> = holds
        .iter()
        .map(|s| {
            let l = sem_as_listed(s);
            vec![
                text(&s.id),
                s.capacity.to_string(),
                text(&s.owner),
                s.permits.to_string(),
                s.token.to_string(),
                time_ms(s.locked_at),
                time_ms(s.refreshed_at),
                ttl(&l.info),
                expires_in(&l.info, s.expired),
            ]
        })
        .collect();
    table(
        &[
            ("ID", Align::Left),
            ("CAPACITY", Align::Right),
            ("OWNER", Align::Left),
            ("PERMITS", Align::Right),
            ("TOKEN", Align::Right),
            ("LOCKED_AT", Align::Left),
            ("REFRESHED_AT", Align::Left),
            ("TTL", Align::Right),
            ("EXPIRES_IN", Align::Right),
        ],
        &rows,
    )
}

/// The permits held by `holders`.
pub fn permits_held(holders: &[Holder]) -> u64 {
    holders.iter().map(|h| u64::from(h.permits)).sum()
}

/// `sem status`: the id, the permits held of the capacity, then one row
/// per live holder.
pub fn sem_block(id: &str, capacity: u32, holders: &[Holder]) -> String {
    block(&[
        ("id", text(id)),
        (
            "permits",
            format!("{} of {capacity} held", permits_held(holders)),
        ),
        ("holders", holders.len().to_string()),
    ]) + &holders_table(holders, true)
}

/// The key/value block of `status`.
pub fn lock_block(id: &str, info: &Info) -> String {
    let ttl_line = if info.ttl_ms == 0 {
        "none (never expires)".to_string()
    } else {
        format!("{} ({} ms)", duration(info.ttl_ms), info.ttl_ms)
    };
    let lines = [
        ("id", text(id)),
        ("owner", text(&info.owner)),
        ("token", info.token.to_string()),
        ("locked_at", time_ms(info.locked_at)),
        ("refreshed_at", time_ms(info.refreshed_at)),
        ("ttl", ttl_line),
        ("expires_in", expires_in(info, false)),
    ];
    block(&lines)
}

/// The table of `history`.
pub fn history_table(events: &[Event]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                time_ms(e.at),
                e.event.clone(),
                text(&e.owner),
                e.token.to_string(),
                e.actor.as_deref().map_or("-".to_string(), text),
            ]
        })
        .collect();
    table(
        &[
            ("SEQ", Align::Right),
            ("AT", Align::Left),
            ("EVENT", Align::Left),
            ("OWNER", Align::Left),
            ("TOKEN", Align::Right),
            ("ACTOR", Align::Left),
        ],
        &rows,
    )
}

/// A lock hold; `mode` one of the `MODE_*`.
pub fn lock_json(id: &str, info: &Info, expired: bool, mode: i32) -> Value {
    json!({
        "id": id,
        "owner": info.owner,
        "token": info.token,
        "locked_at": time_us(info.locked_at),
        "locked_at_us": epoch_us(info.locked_at),
        "refreshed_at": time_us(info.refreshed_at),
        "refreshed_at_us": epoch_us(info.refreshed_at),
        "ttl_ms": info.ttl_ms,
        "expires_in_ms": expires_in_ms(info.expires_in_ms),
        "expired": expired,
        "mode": mode_name(mode),
    })
}

pub fn locks_json(locks: &[Listed]) -> Value {
    Value::Array(
        locks
            .iter()
            .map(|l| lock_json(&l.id, &l.info, l.expired, l.mode))
            .collect(),
    )
}

/// `expires_in_ms` of JSON: null for no lease.
fn expires_in_ms(ms: i64) -> Option<i64> {
    if ms < 0 { None } else { Some(ms) }
}

/// `status --json` of a lock held shared.
pub fn shared_json(id: &str, holders: &[Holder]) -> Value {
    let holders: Vec<Value> = holders
        .iter()
        .map(|h| {
            json!({
                "owner": h.owner,
                "token": h.token,
                "locked_at": time_us(h.locked_at),
                "locked_at_us": epoch_us(h.locked_at),
                "expires_in_ms": expires_in_ms(h.expires_in_ms),
            })
        })
        .collect();
    json!({
        "id": id,
        "mode": mode_name(MODE_SHARED),
        "holders": holders,
    })
}

/// `sem list --json`.
pub fn sems_json(holds: &[SemListed]) -> Value {
    Value::Array(
        holds
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "capacity": s.capacity,
                    "owner": s.owner,
                    "permits": s.permits,
                    "token": s.token,
                    "locked_at": time_us(s.locked_at),
                    "locked_at_us": epoch_us(s.locked_at),
                    "refreshed_at": time_us(s.refreshed_at),
                    "refreshed_at_us": epoch_us(s.refreshed_at),
                    "ttl_ms": s.ttl_ms,
                    "expires_in_ms": expires_in_ms(s.expires_in_ms),
                    "expired": s.expired,
                })
            })
            .collect(),
    )
}

/// `sem status --json`.
pub fn sem_json(id: &str, capacity: u32, holders: &[Holder]) -> Value {
    let list: Vec<Value> = holders
        .iter()
        .map(|h| {
            json!({
                "owner": h.owner,
                "permits": h.permits,
                "token": h.token,
                "locked_at": time_us(h.locked_at),
                "locked_at_us": epoch_us(h.locked_at),
                "expires_in_ms": expires_in_ms(h.expires_in_ms),
            })
        })
        .collect();
    json!({
        "id": id,
        "capacity": capacity,
        "held": permits_held(holders),
        "holders": list,
    })
}

pub fn history_json(events: &[Event]) -> Value {
    Value::Array(
        events
            .iter()
            .map(|e| {
                json!({
                    "seq": e.seq,
                    "at": time_us(e.at),
                    "at_us": epoch_us(e.at),
                    "event": e.event,
                    "owner": e.owner,
                    "token": e.token,
                    "actor": e.actor,
                })
            })
            .collect(),
    )
}

/// `--json` output: pretty-printed, one trailing newline.
pub fn json_text(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("a Value always serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0, 3), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1, 3), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(-1, 6), "1969-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(951_782_400_123_456, 3), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339(951_782_400_123_456, 6),
            "2000-02-29T00:00:00.123456Z"
        );
        assert_eq!(
            rfc3339(1_709_251_199_000_000, 3),
            "2024-02-29T23:59:59.000Z"
        );
        assert_eq!(
            rfc3339(253_402_300_799_999_999, 6),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339(-62_135_596_800_000_000, 3),
            "0001-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn days_round_trip() {
        // Every day of 400 years (one full Gregorian cycle) follows the
        // previous one.
        let mut prev = civil_from_days(-1);
        for d in 0..146_097 {
            let cur = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = (prev.0, prev.1 + 1, 1);
            let next_year = (prev.0 + 1, 1, 1);
            assert!(
                cur == next_day || cur == next_month || cur == next_year,
                "{prev:?} -> {cur:?}"
            );
            assert!(cur.2 <= 31);
            prev = cur;
        }
        assert_eq!(prev, (2369, 12, 31));
    }

    #[test]
    fn epoch_us_both_sides() {
        assert_eq!(epoch_us(UNIX_EPOCH + Duration::from_micros(5)), 5);
        assert_eq!(epoch_us(UNIX_EPOCH - Duration::from_micros(5)), -5);
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0.0s");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(59_999), "59.9s");
        assert_eq!(duration(60_000), "1m00s");
        assert_eq!(duration(3_599_999), "59m59s");
        assert_eq!(duration(3_600_000), "1h00m00s");
        assert_eq!(duration(90_061_000), "1d01h01m");
    }

    #[test]
    fn tables_align_and_escape() {
        let t = table(
            &[
                ("A", Align::Left),
                ("NUM", Align::Right),
                ("Z", Align::Left),
            ],
            &[
                vec!["long".into(), "1".into(), "x".into()],
                vec![text("a\nb"), "100".into(), "".into()],
            ],
        );
        assert_eq!(t, "A     NUM  Z\nlong    1  x\na\\nb  100\n");
    }
}
