//! Why the rate is what it is, in words and figures: what the throttle keeps current as it
//! decides (`sluice_rate_reason` is the same reason as a metric), and what `/v1/status` and
//! `sluice-agent status` show.

use serde::{Deserialize, Serialize};

/// Why the rate is what it is (`sluice_rate_reason`), with the foreground probe's figures in
/// adaptive mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateExplained {
    /// The `reason` label: `fixed`, `probe_latency`, `climbing`, …
    pub reason: String,
    /// The same, in words, with the figures behind it.
    pub detail: String,
    pub probe_p50_seconds: Option<f64>,
    pub probe_p99_seconds: Option<f64>,
    pub probe_baseline_seconds: Option<f64>,
    pub probe_limit_seconds: Option<f64>,
    /// What the throttle holds under the limit: the median of the judged window's five-second
    /// windows' quantiles (`LatencyGuard::judged`), once there is a baseline.
    pub probe_reading_seconds: Option<f64>,
}

/// `probe_latency: backing off: … · probe p50 0.40 ms, p99 2.10 ms · baseline 0.50 ms (limit
/// 0.75 ms, reading 0.90 ms)`: the `status` line.
impl std::fmt::Display for RateExplained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |s: f64| format!("{:.2} ms", s * 1000.0);
        write!(f, "{}: {}", self.reason, self.detail)?;
        if let (Some(p50), Some(p99)) = (self.probe_p50_seconds, self.probe_p99_seconds) {
            write!(f, " · probe p50 {}, p99 {}", ms(p50), ms(p99))?;
        }
        match (self.probe_baseline_seconds, self.probe_limit_seconds) {
            (Some(b), Some(l)) => {
                write!(f, " · baseline {} (limit {}", ms(b), ms(l))?;
                if let Some(r) = self.probe_reading_seconds {
                    write!(f, ", reading {}", ms(r))?;
                }
                write!(f, ")")
            }
            _ if self.probe_p50_seconds.is_some() => write!(f, " · baseline not learned yet"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_reason_line_shows_the_probe_and_its_baseline() {
        let mut t = RateExplained {
            reason: "probe_latency".into(),
            detail: "backing off: probe p95 3.00 ms above its limit 1.50 ms".into(),
            probe_p50_seconds: Some(0.002),
            probe_p99_seconds: Some(0.004),
            probe_baseline_seconds: Some(0.001),
            probe_limit_seconds: Some(0.0015),
            probe_reading_seconds: Some(0.003),
        };
        assert_eq!(
            t.to_string(),
            "probe_latency: backing off: probe p95 3.00 ms above its limit 1.50 ms · \
             probe p50 2.00 ms, p99 4.00 ms · baseline 1.00 ms (limit 1.50 ms, reading 3.00 ms)"
        );
        t.probe_baseline_seconds = None;
        t.probe_limit_seconds = None;
        assert!(t.to_string().ends_with("baseline not learned yet"));
        let fixed = RateExplained {
            reason: "fixed".into(),
            detail: "throttle.rows_per_second".into(),
            ..RateExplained::default()
        };
        assert_eq!(fixed.to_string(), "fixed: throttle.rows_per_second");
    }
}
