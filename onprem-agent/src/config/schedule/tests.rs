//! Tests of `schedule`.

use super::*;
use Weekday::*;

fn window(days: &str, hours: &str, rate: u32) -> Window {
    Window {
        days: Days::parse(days).expect("valid days"),
        hours: Hours::parse(hours).expect("valid hours"),
        rows_per_second: rate,
    }
}

#[test]
fn a_day_range_covers_both_ends_and_everything_between() {
    let d = Days::parse("Mon-Fri").expect("valid");
    for day in [Mon, Tue, Wed, Thu, Fri] {
        assert!(d.contains(day), "{day:?}");
    }
    assert!(!d.contains(Sat) && !d.contains(Sun));
}

#[test]
fn a_day_list_and_mixed_lists_and_ranges_are_understood() {
    let weekend = Days::parse("Sat,Sun").expect("valid");
    assert_eq!(weekend, Days::parse("sat, SUNDAY").expect("valid"));
    assert!(weekend.contains(Sat) && weekend.contains(Sun) && !weekend.contains(Fri));
    let mixed = Days::parse("Mon,Wed-Fri").expect("valid");
    assert!(mixed.contains(Mon) && !mixed.contains(Tue) && mixed.contains(Thu));
}

#[test]
fn a_day_range_may_wrap_around_the_week() {
    let d = Days::parse("Fri-Mon").expect("valid");
    assert_eq!(d, Days::parse("Fri,Sat,Sun,Mon").expect("valid"));
    assert_eq!(Days::parse("Mon-Sun").expect("valid"), Days::ALL);
}

#[test]
fn bad_days_are_named_in_the_error() {
    assert_eq!(
        Days::parse("Mon-Fry"),
        Err(ScheduleError::UnknownDay("Fry".into()))
    );
    assert_eq!(
        Days::parse("weekdays"),
        Err(ScheduleError::UnknownDay("weekdays".into()))
    );
    assert_eq!(Days::parse(" , "), Err(ScheduleError::NoDays));
}

#[test]
fn bad_hours_are_refused_with_the_reason() {
    assert_eq!(
        Hours::parse("8-18"),
        Err(ScheduleError::BadTime("8".into()))
    );
    assert_eq!(
        Hours::parse("08:00"),
        Err(ScheduleError::NotARange("08:00".into()))
    );
    assert_eq!(
        Hours::parse("25:00-06:00"),
        Err(ScheduleError::BadTime("25:00".into()))
    );
    assert_eq!(
        Hours::parse("08:60-09:00"),
        Err(ScheduleError::BadTime("08:60".into()))
    );
    assert_eq!(
        Hours::parse("09:00-09:00"),
        Err(ScheduleError::EmptyRange("09:00-09:00".into()))
    );
    assert_eq!(
        Hours::parse("24:00-06:00"),
        Err(ScheduleError::BadTime("24:00".into()))
    );
}

#[test]
fn a_daytime_window_includes_its_start_and_excludes_its_end() {
    let w = window("Mon-Fri", "08:00-18:00", 150);
    assert!(w.matches(LocalTime::at(Mon, 8, 0)));
    assert!(w.matches(LocalTime::at(Fri, 17, 59)));
    assert!(!w.matches(LocalTime::at(Fri, 18, 0)));
    assert!(!w.matches(LocalTime::at(Tue, 7, 59)));
    assert!(!w.matches(LocalTime::at(Sat, 12, 0)));
}

#[test]
fn an_overnight_window_runs_into_the_next_morning_of_the_day_it_starts() {
    let w = window("Fri", "22:00-06:00", 2000);
    assert!(w.matches(LocalTime::at(Fri, 22, 0)));
    assert!(w.matches(LocalTime::at(Fri, 23, 59)));
    assert!(
        w.matches(LocalTime::at(Sat, 0, 0)),
        "Friday night goes on after midnight"
    );
    assert!(w.matches(LocalTime::at(Sat, 5, 59)));
    assert!(!w.matches(LocalTime::at(Sat, 6, 0)));
    assert!(
        !w.matches(LocalTime::at(Fri, 5, 0)),
        "Friday early morning belongs to Thursday night"
    );
    assert!(!w.matches(LocalTime::at(Sat, 22, 0)));
}

#[test]
fn an_overnight_window_on_sunday_wraps_into_monday() {
    let w = window("Sun", "23:00-01:00", 10);
    assert!(w.matches(LocalTime::at(Mon, 0, 30)));
    assert!(!w.matches(LocalTime::at(Sun, 0, 30)));
}

#[test]
fn the_whole_day_is_midnight_to_midnight() {
    let w = window("Sat,Sun", "00:00-24:00", 10);
    assert!(w.matches(LocalTime::at(Sat, 0, 0)));
    assert!(w.matches(LocalTime::at(Sun, 23, 59)));
    assert!(!w.matches(LocalTime::at(Mon, 0, 0)));
}

#[test]
fn the_first_matching_window_wins() {
    let s = Schedule {
        windows: vec![
            window("Mon-Fri", "12:00-13:00", 400),
            window("Mon-Fri", "08:00-18:00", 150),
            window("Mon-Sun", "00:00-24:00", 900),
        ],
    };
    let rate = |at| s.window_at(at).map(|(i, w)| (i, w.rows_per_second));
    assert_eq!(rate(LocalTime::at(Wed, 12, 30)), Some((0, 400)));
    assert_eq!(rate(LocalTime::at(Wed, 9, 0)), Some((1, 150)));
    assert_eq!(rate(LocalTime::at(Sun, 9, 0)), Some((2, 900)));
    assert_eq!(
        Schedule::default().window_at(LocalTime::at(Sun, 9, 0)),
        None
    );
}

#[test]
fn local_time_now_is_a_real_minute_of_the_day() {
    let now = LocalTime::now();
    assert!(now.minute < 24 * 60, "{now}");
}
