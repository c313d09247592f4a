//! Money: integer micro-dollars, and their one text form in and out.

use crate::error::{Error, Result};

/// Micro-dollars as a dollar amount with six decimals.
pub fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Parses a dollar amount (`5000`, `0.001`) into micro-dollars exactly.
pub fn parse_usd(what: &str, s: &str) -> Result<u64> {
    let bad = || {
        Error::msg(format!(
            "{what} {s:?} is not a dollar amount; use e.g. 5000 or 0.25 (at most 6 decimals)"
        ))
    };
    let t = s.trim().trim_start_matches('$');
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_round_trip_exactly() {
        assert_eq!(usd(46_625), "0.046625");
        assert_eq!(usd(12_000_000_001), "12000.000001");
        assert_eq!(parse_usd("x", "0.25").unwrap(), 250_000);
        assert_eq!(parse_usd("x", "$5000").unwrap(), 5_000_000_000);
        for bad in ["", ".", "1.2345678", "1e3", "-1", "lots"] {
            assert!(parse_usd("limit", bad).is_err(), "{bad}");
        }
    }
}
