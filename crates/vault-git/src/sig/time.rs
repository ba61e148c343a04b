//! The times of `valid-after` / `valid-before`, read as ssh-keygen reads
//! them (`parse_absolute_time` in OpenSSH's misc.c): `YYYYMMDD`,
//! `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, then optionally `Z` or `UTC` (any
//! case) for UTC. Without the suffix ssh-keygen uses the local time zone
//! (`mktime`), and git hands it the commit's time as local time too.
//!
//! Rule here: a time with `Z`/`UTC` is UTC. A time without it is accepted
//! only where the local zone is UTC (so local time is UTC, exactly as
//! ssh-keygen reads it there); on a host with another zone it is refused
//! with an error asking for the `Z`, never read differently from ssh-keygen.

use std::path::Path;
use vault_core::time::{civil_from_days, days_from_civil};

/// Seconds since the epoch of an allowed-signers time, or why it is not one.
pub(crate) fn parse_absolute_time(text: &str, zone_is_utc: bool) -> Result<i64, String> {
    let upper = text.to_ascii_uppercase();
    let (digits, utc) = if let Some(d) = upper.strip_suffix("UTC").filter(|d| !d.is_empty()) {
        (d, true)
    } else if let Some(d) = upper.strip_suffix('Z').filter(|d| !d.is_empty()) {
        (d, true)
    } else {
        (upper.as_str(), false)
    };
    let bad = || format!("{text:?} is not a time: write YYYYMMDD[HHMM[SS]][Z]");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> i64 {
        digits
            .get(from..to)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let (year, month, day) = (num(0, 4), num(4, 6), num(6, 8));
    let (hour, minute, second) = (num(8, 10), num(10, 12), num(12, 14));
    let valid = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    if !valid {
        return Err(format!("{text:?} is not a valid date and time"));
    }
    if !utc && !zone_is_utc {
        return Err(format!(
            "{text:?} has no Z: ssh-keygen reads it in the local time zone, which is not UTC \
             on this host; write the time in UTC with a trailing Z"
        ));
    }
    let t = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    if t <= 0 {
        // ssh-keygen refuses a time at or before the epoch too.
        return Err(format!("{text:?} is not after 1970-01-01"));
    }
    Ok(t)
}

/// `2005-04-07 22:13:13 UTC`, for messages.
pub(crate) fn format_utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Whether this process's local time zone is UTC, as glibc decides it:
/// `TZ` if set (empty means UTC), else `/etc/localtime` (absent means UTC).
/// Anything not recognized as UTC counts as another zone.
pub(crate) fn local_zone_is_utc() -> bool {
    match std::env::var_os("TZ") {
        Some(tz) => {
            let tz = tz.to_string_lossy();
            let name = tz.strip_prefix(':').unwrap_or(&tz);
            const UTC: &[&str] = &["", "UTC", "UTC0", "GMT", "GMT0", "UCT", "Zulu", "Etc/UTC"];
            UTC.contains(&name)
                || (!name.contains("..")
                    && tzif_is_utc(&Path::new("/usr/share/zoneinfo").join(name)))
                || (name.starts_with('/') && tzif_is_utc(Path::new(name)))
        }
        None => {
            let path = Path::new("/etc/localtime");
            !path.exists() || tzif_is_utc(path)
        }
    }
}

/// A TZif file with no transitions and a single local time type at offset 0.
fn tzif_is_utc(path: &Path) -> bool {
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let word = |at: usize| -> Option<u32> {
        let b = data.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    // Header: magic, version, 15 reserved bytes, then six counts; the
    // first (v1) data block follows at byte 44.
    data.starts_with(b"TZif")
        && word(32) == Some(0) // timecnt
        && word(36) == Some(1) // typecnt
        && word(44) == Some(0) // the one ttinfo's UT offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_ssh_keygen_does() {
        assert_eq!(parse_absolute_time("20050407", true), Ok(1_112_832_000));
        assert_eq!(parse_absolute_time("20050407Z", false), Ok(1_112_832_000));
        assert_eq!(
            parse_absolute_time("200504072213utc", false),
            Ok(1_112_911_980)
        );
        assert_eq!(
            parse_absolute_time("20050407221313z", false),
            Ok(1_112_911_993)
        );
        assert_eq!(format_utc(1_112_911_993), "2005-04-07 22:13:13 UTC");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(parse_absolute_time("20000229Z", false), Ok(951_782_400));
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        for bad in [
            "",
            "Z",
            "2005",
            "2005040",
            "200504070",
            "2005-04-07",
            "20051301",
            "20050431",
            "20010229",
            "200504072400",
            "200504072260",
            "20050407235960",
            "19700101Z",
            "UTC",
            "20050407 ",
        ] {
            assert!(parse_absolute_time(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn local_time_only_where_the_zone_is_utc() {
        let err = parse_absolute_time("20050407", false).unwrap_err();
        assert!(err.contains("trailing Z"), "{err}");
        assert!(parse_absolute_time("20050407Z", false).is_ok());
    }

    #[test]
    fn this_host_zone_is_read() {
        // The machine this runs on is set to UTC; the reading must say so
        // (and must not panic wherever it runs).
        let _ = local_zone_is_utc();
        let utc = Path::new("/usr/share/zoneinfo/Etc/UTC");
        assert!(tzif_is_utc(utc) || !utc.exists());
        if Path::new("/usr/share/zoneinfo/Europe/Paris").exists() {
            assert!(!tzif_is_utc(Path::new("/usr/share/zoneinfo/Europe/Paris")));
        }
    }
}
