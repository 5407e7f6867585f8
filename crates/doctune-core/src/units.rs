//! Sizes for people: `1.5 MB` (powers of 1024, as file managers show them), counts as model
//! cards write them (`494M`, `1.5B`), and durations (`3 min 20 s`).

/// `12 B`, `1.5 KB`, `2.0 GB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// Counts the way model cards write them: `494M`, `1.5B`, `12.3K`.
pub fn human_count(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.*}B", usize::from(f < 1e10), f / 1e9)
    } else if f >= 1e6 {
        format!("{:.*}M", usize::from(f < 1e7), f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1}K", f / 1e3)
    } else {
        n.to_string()
    }
}

/// `45 s`, `3 min 20 s`, `2 h 05 min` (seconds rounded; negative or not finite: `0 s`).
pub fn human_duration(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.round() as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(44.6), "45 s");
        assert_eq!(human_duration(200.0), "3 min 20 s");
        assert_eq!(human_duration(7500.0), "2 h 05 min");
        assert_eq!(human_duration(f64::NAN), "0 s");
        assert_eq!(human_duration(-3.0), "0 s");
    }

    #[test]
    fn human_counts() {
        assert_eq!(human_count(494_032_768), "494M");
        assert_eq!(human_count(1_543_714_304), "1.5B");
        assert_eq!(human_count(5_300_000), "5.3M");
        assert_eq!(human_count(12_345), "12.3K");
        assert_eq!(human_count(7), "7");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KB");
        assert_eq!(human_bytes(2 << 30), "2.0 GB");
    }
}
