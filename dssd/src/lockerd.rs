//! lockerd's wire rules, reproduced exactly (audacious-io/distlock,
//! `httpserver/` and `locking/path.go`): the lock path grammar, the
//! duration grammar in and out, ids as `strconv.ParseInt`, and parameters
//! as Go's `Request.FormValue` reads them.

/// The lock name of a URL path (already percent-decoded): leading slashes
/// stripped, then `^[\w\-.:@]+(?:/[\w\-.:@]+)*$` with ASCII `\w` (lockerd's
/// grammar plus `.`, `:` and `@`). None: lockerd's 404.
pub fn lock_name(path: &[u8]) -> Option<&str> {
    let mut start = 0;
    while start < path.len() && path[start] == b'/' {
        start += 1;
    }
    let name = &path[start..];
    let segment_byte =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@');
    let valid = !name.is_empty()
        && name
            .split(|&b| b == b'/')
            .all(|seg| !seg.is_empty() && seg.iter().all(|&b| segment_byte(b)));
    // Only ASCII bytes pass, so this never fails.
    valid.then(|| std::str::from_utf8(name).ok()).flatten()
}

/// lockerd's `ParseDuration`, in milliseconds: exactly `0`, or
/// `^(\d+)(ms|s|m|h)$` with ASCII digits. None: invalid (also a number
/// too large to count in milliseconds, where lockerd would overflow).
pub fn parse_duration(s: &[u8]) -> Option<u64> {
    if s == b"0" {
        return Some(0);
    }
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let unit: u64 = match &s[digits..] {
        b"ms" => 1,
        b"s" => 1000,
        b"m" => 60_000,
        b"h" => 3_600_000,
        _ => return None,
    };
    let mut n: u64 = 0;
    for &b in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    n.checked_mul(unit)
}

/// lockerd's `FormatDuration` of `ms` milliseconds: negative → `"0"`;
/// 5 s or more → `"%.3fs"`; else `"%.3fms"`.
pub fn format_duration(ms: i64) -> String {
    if ms < 0 {
        "0".to_string()
    } else if ms >= 5000 {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    } else {
        format!("{ms}.000ms")
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: an optional sign, then ASCII
/// digits, within i64.
pub fn parse_id(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Accumulate negatively so that i64::MIN parses.
    let mut n: i64 = 0;
    for &b in digits {
        n = n.checked_mul(10)?.checked_sub(i64::from(b - b'0'))?;
    }
    if negative { Some(n) } else { n.checked_neg() }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding; `plus`: `+` is a space (query strings). None on a bad
/// escape (Go refuses those).
pub fn percent_decode(s: &[u8], plus: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let hi = hex(*s.get(i + 1)?)?;
                let lo = hex(*s.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `url.ParseQuery`, keeping what it keeps: pairs split on `&`; a
/// pair with `;` or a bad escape is skipped, and so is an empty one; the
/// key and value are split at the first `=`.
pub fn parse_query(s: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    for pair in s.split(|&b| b == b'&') {
        if pair.is_empty() || pair.contains(&b';') {
            continue;
        }
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &b""[..]),
        };
        if let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) {
            pairs.push((k, v));
        }
    }
    pairs
}

/// The parameters of a request, as `Request.FormValue` sees them: the
/// form-urlencoded body's first (for POST and PATCH), else the query
/// string's first, else empty.
#[derive(Default)]
pub struct Form {
    body: Vec<(Vec<u8>, Vec<u8>)>,
    query: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Form {
    pub fn new(query: Option<&str>, body: Option<&[u8]>) -> Form {
        Form {
            body: body.map(parse_query).unwrap_or_default(),
            query: query.map(|q| parse_query(q.as_bytes())).unwrap_or_default(),
        }
    }

    /// The value of `key`, `b""` when absent (as FormValue).
    pub fn value(&self, key: &str) -> &[u8] {
        self.body
            .iter()
            .chain(self.query.iter())
            .find(|(k, _)| k == key.as_bytes())
            .map_or(&b""[..], |(_, v)| v.as_slice())
    }
}

/// True when a Content-Type is `application/x-www-form-urlencoded`
/// (parameters ignored, case-insensitive), the only body Go's FormValue
/// reads besides multipart (which dssd does not).
pub fn is_form_content_type(ct: &str) -> bool {
    ct.split(';').next().is_some_and(|t| {
        t.trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_lockerd_plus_dot_colon_at() {
        // locking/path_test.go
        assert_eq!(lock_name(b"/a"), Some("a"));
        assert_eq!(lock_name(b"//a"), Some("a"));
        assert_eq!(lock_name(b"/a/b-c_d/9"), Some("a/b-c_d/9"));
        for bad in [
            &b""[..],
            b"/",
            b"//",
            b"a/",
            b"/a//b",
            "/aø".as_bytes(),
            b"/a b",
            b"/a%",
        ] {
            assert_eq!(lock_name(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // dssd's additions
        assert_eq!(lock_name(b"/media:L00042"), Some("media:L00042"));
        assert_eq!(lock_name(b"/u@h/v1.2"), Some("u@h/v1.2"));
        assert_eq!(lock_name(b"/.."), Some(".."));
    }

    #[test]
    fn durations_in() {
        assert_eq!(parse_duration(b"0"), Some(0));
        assert_eq!(parse_duration(b"0s"), Some(0));
        assert_eq!(parse_duration(b"500ms"), Some(500));
        assert_eq!(parse_duration(b"10s"), Some(10_000));
        assert_eq!(parse_duration(b"1m"), Some(60_000));
        assert_eq!(parse_duration(b"2h"), Some(7_200_000));
        assert_eq!(parse_duration(b"007s"), Some(7000));
        for bad in [
            &b""[..],
            b"00",
            b"5",
            b"1d",
            b"123a",
            b"1m30s",
            b"1.5s",
            b"-1s",
            b" 1s",
            b"1s ",
            b"1s\n",
            b"ms",
            b"1MS",
            "١s".as_bytes(),
            b"99999999999999999999h",
        ] {
            assert_eq!(
                parse_duration(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn durations_out() {
        assert_eq!(format_duration(-1), "0");
        assert_eq!(format_duration(0), "0.000ms");
        assert_eq!(format_duration(4999), "4999.000ms");
        assert_eq!(format_duration(5000), "5.000s");
        assert_eq!(format_duration(59_998), "59.998s");
    }

    #[test]
    fn ids_as_parseint() {
        assert_eq!(parse_id(b"42"), Some(42));
        assert_eq!(parse_id(b"+42"), Some(42));
        assert_eq!(parse_id(b"-42"), Some(-42));
        assert_eq!(parse_id(b"0"), Some(0));
        assert_eq!(parse_id(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_id(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"+",
            b"-",
            b"9223372036854775808",
            b"1e3",
            b" 1",
            b"0x10",
            b"1.0",
        ] {
            assert_eq!(parse_id(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn form_values_as_go() {
        let f = Form::new(
            Some("lock_timeout=1s&lease_timeout=2s&id=%zz&owner=a+b%21&x;y=1&&lock_timeout=9s"),
            Some(b"lease_timeout=5s&empty="),
        );
        assert_eq!(f.value("lock_timeout"), b"1s");
        assert_eq!(f.value("lease_timeout"), b"5s", "the body wins");
        assert_eq!(f.value("id"), b"", "bad escape skipped");
        assert_eq!(f.value("owner"), b"a b!");
        assert_eq!(f.value("x;y"), b"");
        assert_eq!(f.value("empty"), b"");
        assert_eq!(f.value("missing"), b"");
        assert!(is_form_content_type("application/x-www-form-urlencoded"));
        assert!(is_form_content_type(
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
        ));
        assert!(!is_form_content_type("application/json"));
    }
}
