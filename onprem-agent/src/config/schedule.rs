//! Throttle schedules: `[[throttle.schedule]]` windows — weekdays plus a local time range —
//! that set the rate while they match. Windows are tried in the order written; the first match
//! wins, and outside every window `throttle.rows_per_second` applies.
//!
//! A window whose range crosses midnight (`22:00-06:00`) belongs to the day it *starts* on:
//! `days = "Fri"`, `hours = "22:00-06:00"` matches Friday 22:00 until Saturday 06:00. Local
//! time is the system's time zone (`TZ`, else `/etc/localtime`; UTC when neither names one),
//! read with its daylight-saving rules on every check.
//!
//! Parsing and matching are pure (no clock); [`LocalTime::now`] is the only place that reads
//! the time.

use std::fmt;

/// A day of the week, Monday first (ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

const WEEK: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

impl Weekday {
    fn index(self) -> usize {
        self as usize
    }

    /// The day before (Sunday before Monday).
    pub fn previous(self) -> Weekday {
        WEEK[(self.index() + 6) % 7]
    }

    fn parse(s: &str) -> Option<Weekday> {
        let lower = s.trim().to_ascii_lowercase();
        DAY_NAMES
            .iter()
            .position(|(short, long)| lower == *short || lower == *long)
            .map(|i| WEEK[i])
    }
}

/// A wall-clock moment as schedules see it: the weekday and the minute of that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    pub weekday: Weekday,
    /// 0..1440.
    pub minute: u16,
}

impl LocalTime {
    /// `LocalTime::at(Weekday::Mon, 8, 30)`.
    pub fn at(weekday: Weekday, hour: u8, minute: u8) -> Self {
        Self {
            weekday,
            minute: u16::from(hour) * 60 + u16::from(minute),
        }
    }

    /// Now, in the system's time zone.
    pub fn now() -> Self {
        let now = jiff::Zoned::now();
        let weekday = WEEK[usize::from(now.weekday().to_monday_zero_offset().unsigned_abs()) % 7];
        let hour = u8::try_from(now.hour()).unwrap_or(0);
        let minute = u8::try_from(now.minute()).unwrap_or(0);
        Self::at(weekday, hour, minute)
    }
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:02}:{:02}",
            self.weekday,
            self.minute / 60,
            self.minute % 60
        )
    }
}

/// Why a `days` or `hours` value was refused. The message is shown after the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0:?} is not a day (use Mon, Tue, Wed, Thu, Fri, Sat, Sun, ranges like \"Mon-Fri\" and lists like \"Sat,Sun\")")]
    UnknownDay(String),
    #[error("no days given (e.g. \"Mon-Fri\" or \"Sat,Sun\")")]
    NoDays,
    #[error("{0:?} is not a time range like \"08:00-18:00\"")]
    NotARange(String),
    #[error("{0:?} is not a time between 00:00 and 24:00 (HH:MM)")]
    BadTime(String),
    #[error(
        "{0:?} is empty: it starts and ends at the same time (\"00:00-24:00\" is the whole day)"
    )]
    EmptyRange(String),
}

/// A set of weekdays.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    pub const ALL: Days = Days(0b111_1111);

    pub fn contains(self, d: Weekday) -> bool {
        self.0 & (1 << d.index()) != 0
    }

    fn insert(&mut self, d: Weekday) {
        self.0 |= 1 << d.index();
    }

    /// `"Mon-Fri"`, `"Sat,Sun"`, `"Mon,Wed-Fri"`; a range may wrap (`"Fri-Mon"`); names are
    /// case-insensitive, short or long (`"monday"`).
    pub fn parse(s: &str) -> Result<Days, ScheduleError> {
        let mut days = Days(0);
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('-') {
                Some((a, b)) => {
                    let from = Weekday::parse(a)
                        .ok_or_else(|| ScheduleError::UnknownDay(a.trim().to_owned()))?;
                    let to = Weekday::parse(b)
                        .ok_or_else(|| ScheduleError::UnknownDay(b.trim().to_owned()))?;
                    let mut d = from;
                    loop {
                        days.insert(d);
                        if d == to {
                            break;
                        }
                        d = WEEK[(d.index() + 1) % 7];
                    }
                }
                None => days.insert(
                    Weekday::parse(part)
                        .ok_or_else(|| ScheduleError::UnknownDay(part.to_owned()))?,
                ),
            }
        }
        if days.0 == 0 {
            return Err(ScheduleError::NoDays);
        }
        Ok(days)
    }
}

impl fmt::Debug for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = WEEK
            .iter()
            .filter(|d| self.contains(**d))
            .map(|d| format!("{d:?}"))
            .collect();
        write!(f, "Days({})", names.join(","))
    }
}

/// A local time range `start-end`, in minutes of the day; `end < start` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    start: u16,
    end: u16,
}

impl Hours {
    pub const ALL_DAY: Hours = Hours {
        start: 0,
        end: 24 * 60,
    };

    /// `"08:00-18:00"`, `"22:00-06:00"` (overnight), `"00:00-24:00"` (all day).
    pub fn parse(s: &str) -> Result<Hours, ScheduleError> {
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| ScheduleError::NotARange(s.to_owned()))?;
        let start = parse_hhmm(a.trim())?;
        let end = parse_hhmm(b.trim())?;
        if start == end || (start == 24 * 60 && end == 0) {
            return Err(ScheduleError::EmptyRange(s.to_owned()));
        }
        if start == 24 * 60 {
            // "24:00-06:00" means "00:00-06:00" of the next day: say it plainly instead.
            return Err(ScheduleError::BadTime(a.trim().to_owned()));
        }
        Ok(Hours { start, end })
    }

    pub fn crosses_midnight(self) -> bool {
        self.end < self.start
    }
}

fn parse_hhmm(s: &str) -> Result<u16, ScheduleError> {
    let bad = || ScheduleError::BadTime(s.to_owned());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// One `[[throttle.schedule]]` entry, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: Days,
    pub hours: Hours,
    pub rows_per_second: u32,
}

impl Window {
    /// Whether the window covers `at`. An overnight range belongs to the day it starts on.
    pub fn matches(&self, at: LocalTime) -> bool {
        let Hours { start, end } = self.hours;
        if self.hours.crosses_midnight() {
            (self.days.contains(at.weekday) && at.minute >= start)
                || (self.days.contains(at.weekday.previous()) && at.minute < end)
        } else {
            self.days.contains(at.weekday) && at.minute >= start && at.minute < end
        }
    }
}

/// The windows in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub windows: Vec<Window>,
}

impl Schedule {
    /// The first window covering `at`, with its position in the list.
    pub fn window_at(&self, at: LocalTime) -> Option<(usize, &Window)> {
        self.windows.iter().enumerate().find(|(_, w)| w.matches(at))
    }
}

#[cfg(test)]
mod tests;
