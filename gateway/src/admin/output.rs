//! How admin answers are printed: aligned tables and words for people
//! (times as "3 min ago", sizes in MiB), or the answer's proto3 JSON form
//! for scripts (the same form as `report --format json`: `.proto` field
//! names, every field present, timestamps in RFC 3339).
//!
//! Pure formatting; the only I/O is writing to stdout.

use std::process::ExitCode;

use prost::Message;

use crate::reports::format::json_of;

/// The proto3 JSON form of `message` (a `liandong.v1` message named
/// `full_name`), one document with a trailing newline.
pub fn json(message: &impl Message, full_name: &str) -> String {
    let mut text = json_of(message, full_name).to_string();
    text.push('\n');
    text
}

/// Writes `text` to stdout; a reader that stops early (`| head`) is not
/// an error. Exit code 0, or 1 when stdout cannot be written.
pub fn print(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("liandong-gateway admin: cannot write the answer: {error}");
            ExitCode::FAILURE
        }
    }
}

/// A timestamp as UTC date and time to the second
/// (`2026-11-30 22:41:07 UTC`), or "-" when unset.
pub fn when(at: Option<&prost_types::Timestamp>) -> String {
    let Some(at) = at else {
        return "-".to_owned();
    };
    match time::OffsetDateTime::from_unix_timestamp(at.seconds) {
        Ok(at) => crate::ops::snapshot::utc_clock(at),
        Err(_) => "-".to_owned(),
    }
}

/// How long ago `at` was, seen at `now` (unix seconds): "just now",
/// "42 s ago", "3 min ago", "5 h ago", "2 d ago"; "in 3 min" for a time
/// ahead; "-" when unset.
pub fn ago(at: Option<&prost_types::Timestamp>, now: i64) -> String {
    let Some(at) = at else {
        return "-".to_owned();
    };
    let elapsed = now - at.seconds;
    if elapsed < 0 {
        return format!("in {}", duration(elapsed.unsigned_abs()));
    }
    if elapsed < 1 {
        return "just now".to_owned();
    }
    format!("{} ago", duration(elapsed.unsigned_abs()))
}

/// A duration in its largest sensible unit: "42 s", "3 min", "5 h 12 min",
/// "2 d 3 h".
pub fn duration(seconds: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match seconds {
        s if s < MINUTE => format!("{s} s"),
        s if s < HOUR => format!("{} min", s / MINUTE),
        s if s < DAY => match (s % HOUR) / MINUTE {
            0 => format!("{} h", s / HOUR),
            m => format!("{} h {m} min", s / HOUR),
        },
        s => match (s % DAY) / HOUR {
            0 => format!("{} d", s / DAY),
            h => format!("{} d {h} h", s / DAY),
        },
    }
}

/// A size in bytes in binary units: "512 B", "3.4 KiB", "12.0 MiB".
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A subscription's lag in words: "up to date", "12 notifications, oldest
/// 3 min", "10000+ notifications, oldest 2 d" when the count was capped.
pub fn lag(messages: u64, capped: bool, seconds: u64) -> String {
    if messages == 0 {
        return "up to date".to_owned();
    }
    let plus = if capped { "+" } else { "" };
    let noun = if messages == 1 && !capped {
        "notification"
    } else {
        "notifications"
    };
    format!("{messages}{plus} {noun}, oldest {}", duration(seconds))
}

/// How many terminal columns `text` takes: East Asian wide and
/// full-width characters (Chinese names) take two.
pub fn display_width(text: &str) -> usize {
    text.chars()
        .map(|c| match u32::from(c) {
            0x1100..=0x115F
            | 0x2E80..=0x303E
            | 0x3041..=0x33FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xA000..=0xA4CF
            | 0xAC00..=0xD7A3
            | 0xF900..=0xFAFF
            | 0xFE30..=0xFE4F
            | 0xFF00..=0xFF60
            | 0xFFE0..=0xFFE6
            | 0x20000..=0x3FFFD => 2,
            _ => 1,
        })
        .sum()
}

/// An aligned table for a terminal: the header, then one line per row;
/// columns two spaces apart (by display width, so Chinese names line up),
/// trailing spaces trimmed.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(display_width);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(display_width(cell));
        }
    }
    let line = |cells: [&str; N]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < N {
                text.push_str(&" ".repeat(widths[i] - display_width(cell) + 2));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(*header);
    for row in rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// The current time in unix seconds.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests;
