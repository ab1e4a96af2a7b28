//! The agent's `/metrics` (Prometheus text format) parsed once into series — name, labels,
//! value — and queried by name and labels. A query sums every series of the name that carries
//! the given labels: with no labels that is the metric's total, with all of a series' labels
//! (or for an unlabelled metric) it is that one series.

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    series: Vec<Series>,
}

#[derive(Debug, Clone)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Metrics {
    /// Parses the text format; comments and lines that are not a sample are skipped.
    pub fn parse(text: &str) -> Self {
        Self {
            series: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The sum of `name`'s series whose labels include every `labels` pair; `None` when no
    /// series matches (a counter not incremented yet, a gauge not set yet).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .fold(None, |total, v| Some(total.unwrap_or(0.0) + v))
    }

    /// A counter's total over all its series: 0 before its first increment.
    pub fn counter(&self, name: &str) -> f64 {
        self.sum(name, &[]).unwrap_or(0.0)
    }

    /// The value of `label` on the series of `name` that is 1: which one of a one-hot gauge
    /// (`sluice_rate_reason{reason}`) is in force. `None` when none is.
    pub fn one_hot(&self, name: &str, label: &str) -> Option<&str> {
        self.series
            .iter()
            .filter(|s| s.name == name && s.value == 1.0)
            .find_map(|s| {
                s.labels
                    .iter()
                    .find(|(k, _)| k == label)
                    .map(|(_, v)| v.as_str())
            })
    }
}

/// `name{k="v",…} value [timestamp]` → a series.
fn parse_line(line: &str) -> Option<Series> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, rest) = line.split_at(name_end);
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (Vec::new(), rest),
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",…}` (the text after `{`) → the pairs, unescaped, and the text after `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once('=')?;
        let quoted = rest.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        s = &quoted[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "\
# HELP sluice_rows_written_total Receipts written.
# TYPE sluice_rows_written_total counter
sluice_rows_written_total 1500
sluice_rows_written_total_extra 7
sluice_queue_messages{queue=\"main\",state=\"visible\"} 12
sluice_queue_messages{queue=\"main\",state=\"in_flight\"} 3
sluice_queue_messages{queue=\"dlq\",state=\"visible\"} 0
sluice_commit_seconds_bucket{le=\"+Inf\"} 40
sluice_errors_total{kind=\"say \\\"hi\\\", then\\\\leave\"} 2 1700000000000
sluice_rate_rows_per_second 2.5e2
sluice_rate_reason{reason=\"climbing\"} 0
sluice_rate_reason{reason=\"probe_latency\"} 1
sluice_rate_reason{reason=\"idle\"} 0
";

    #[test]
    fn the_one_hot_series_names_the_label_in_force() {
        let m = Metrics::parse(SCRAPE);
        assert_eq!(
            m.one_hot("sluice_rate_reason", "reason"),
            Some("probe_latency")
        );
        assert_eq!(m.one_hot("sluice_queue_messages", "queue"), None);
        assert_eq!(m.one_hot("sluice_rate_reason", "other"), None);
    }

    #[test]
    fn an_unlabelled_metric_is_its_one_series_and_a_longer_name_is_another_metric() {
        let m = Metrics::parse(SCRAPE);
        assert_eq!(m.sum("sluice_rows_written_total", &[]), Some(1500.0));
        assert_eq!(m.sum("sluice_rate_rows_per_second", &[]), Some(250.0));
        assert_eq!(m.sum("sluice_rows_written", &[]), None);
    }

    #[test]
    fn labels_select_the_series_that_carry_them_and_the_rest_is_summed() {
        let m = Metrics::parse(SCRAPE);
        assert_eq!(m.sum("sluice_queue_messages", &[]), Some(15.0));
        assert_eq!(
            m.sum("sluice_queue_messages", &[("queue", "main")]),
            Some(15.0)
        );
        assert_eq!(
            m.sum(
                "sluice_queue_messages",
                &[("queue", "main"), ("state", "in_flight")]
            ),
            Some(3.0)
        );
        assert_eq!(
            m.sum("sluice_queue_messages", &[("queue", "dlq")]),
            Some(0.0)
        );
        assert_eq!(m.sum("sluice_queue_messages", &[("queue", "other")]), None);
        assert_eq!(
            m.sum("sluice_commit_seconds_bucket", &[("le", "+Inf")]),
            Some(40.0)
        );
    }

    #[test]
    fn a_counter_is_its_total_and_0_before_its_first_increment() {
        let m = Metrics::parse(SCRAPE);
        assert_eq!(m.counter("sluice_queue_messages"), 15.0);
        assert_eq!(m.counter("sluice_receipts_conflict_total"), 0.0);
    }

    #[test]
    fn escaped_label_values_and_timestamps_are_read() {
        let m = Metrics::parse(SCRAPE);
        assert_eq!(
            m.sum(
                "sluice_errors_total",
                &[("kind", "say \"hi\", then\\leave")]
            ),
            Some(2.0)
        );
    }

    #[test]
    fn text_that_is_not_a_sample_is_skipped() {
        let m = Metrics::parse("not a metric line\n{}\nx{a=\"1\" 2\n\nok 1\n");
        assert_eq!(m.sum("ok", &[]), Some(1.0));
        assert_eq!(m.sum("not", &[]), None);
        assert_eq!(m.sum("x", &[]), None);
    }
}
