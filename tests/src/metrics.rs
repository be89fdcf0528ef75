//! Reading Envoy's `/stats/prometheus` output.
//!
//! The filter's metrics live in Envoy's `wasmcustom` stat namespace, which
//! Envoy exports without its `envoy_` prefix; the per-hunt gauges
//! `huntgate_hunt.<hunt>.active|limit` get their hunt id moved into the
//! `hunt` label by the `stats_tags` rule of the e2e configs. The exported
//! names are kept here, in one place.

/// Counter names as exported.
pub const ADMITTED: &str = "huntgate_admitted";
pub const RENEWED: &str = "huntgate_renewed";
pub const REJECTED: &str = "huntgate_rejected";
pub const SHADOW_REJECTED: &str = "huntgate_shadow_rejected";
pub const BAD_REQUEST: &str = "huntgate_bad_request";
pub const UNTRACKED_HUNT: &str = "huntgate_untracked_hunt";
pub const TICKET_INVALID: &str = "huntgate_ticket_invalid";
pub const SESSION_ENDED: &str = "huntgate_session_ended";

/// Governor feed metrics as exported.
pub const GOVERNOR_FETCH_OK: &str = "huntgate_governor_fetch_ok";
pub const GOVERNOR_FETCH_FAILED: &str = "huntgate_governor_fetch_failed";
pub const GOVERNOR_DOCUMENT_AGE_MS: &str = "huntgate_governor_document_age_ms";
pub const GOVERNOR_UP: &str = "huntgate_governor_up";

/// Per-hunt gauges as exported (with label `hunt`).
pub const HUNT_ACTIVE: &str = "huntgate_hunt_active";
pub const HUNT_LIMIT: &str = "huntgate_hunt_limit";

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Self {
            text: text.to_owned(),
            samples,
        }
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    /// Names of all samples that contain `fragment`, for failure messages.
    pub fn names_containing(&self, fragment: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name.contains(fragment))
            .map(|s| {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                format!("{}{{{}}} {}", s.name, labels.join(","), s.value)
            })
            .collect();
        names.sort();
        names
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y"` (values may contain escaped quotes and commas).
fn parse_labels(mut rest: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => {
                    let (_, escaped) = chars.next()?;
                    value.push(if escaped == 'n' { '\n' } else { escaped });
                }
                '"' => break i,
                _ => value.push(c),
            }
        };
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = after.get(end + 1..)?.trim_start_matches(',');
    }
    Some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_and_labelled_gauges() {
        let text = "# TYPE huntgate_admitted counter\nhuntgate_admitted{} 3\n\
                    huntgate_hunt_active{hunt=\"h.1\",x=\"a\\\"b\"} 2\nenvoy_server_live 1\n";
        let metrics = Metrics::parse(text);
        assert_eq!(metrics.get(ADMITTED, &[]), Some(3.0));
        assert_eq!(metrics.get(HUNT_ACTIVE, &[("hunt", "h.1")]), Some(2.0));
        assert_eq!(metrics.get(HUNT_ACTIVE, &[("x", "a\"b")]), Some(2.0));
        assert_eq!(metrics.get(HUNT_ACTIVE, &[("hunt", "h2")]), None);
        assert_eq!(metrics.get("envoy_server_live", &[]), Some(1.0));
    }
}
