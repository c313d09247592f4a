//! `/metrics` in the Prometheus text format (0.0.4), folded from the audit records on the audit
//! writer thread: the request path pays nothing extra. No label ever holds text a client chose
//! freely: models are the recorded (id-shaped) model, and every family caps its series at
//! [`MAX_SERIES`] — further label sets are counted under `_other`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::AuditRecord;

/// Series per metric family before new label sets fold into `_other`.
pub const MAX_SERIES: usize = 2_000;

/// Latency bucket bounds, seconds (added overhead sits in the sub-millisecond ones).
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }
}

type Labels = Vec<(&'static str, String)>;

struct Family<T> {
    series: BTreeMap<Labels, T>,
}

impl<T: Default> Family<T> {
    fn get(&mut self, labels: Labels) -> &mut T {
        if self.series.len() >= MAX_SERIES && !self.series.contains_key(&labels) {
            let other = labels.iter().map(|(k, _)| (*k, "_other".to_string())).collect();
            return self.series.entry(other).or_default();
        }
        self.series.entry(labels).or_default()
    }
}

impl<T> Default for Family<T> {
    fn default() -> Self {
        Family {
            series: BTreeMap::new(),
        }
    }
}

#[derive(Default)]
struct Inner {
    requests: Family<u64>,
    tokens: Family<u64>,
    cost_micros: Family<u64>,
    unpriced: Family<u64>,
    findings: Family<u64>,
    refusals: Family<u64>,
    upstream_errors: Family<u64>,
    duration: Family<Histogram>,
    ttfb: Family<Histogram>,
    overhead: Family<Histogram>,
    policy: Family<Histogram>,
}

/// The gateway's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Gateway refusals counted as such (`conduit_refusals_total{reason}`).
const REFUSALS: &[&str] = &[
    "unauthenticated",
    "forbidden",
    "budget_exceeded",
    "rate_limited",
    "policy_blocked",
    "policy_unavailable",
    "payload_too_large",
    "bad_request",
    "endpoint_refused",
    "method_not_allowed",
    "unsupported_media_type",
];

impl Metrics {
    /// Folds one finished request in.
    pub fn observe(&self, r: &AuditRecord) {
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let provider = r.provider.clone().unwrap_or_else(|| "-".into());
        let model = r.model.clone().unwrap_or_else(|| "-".into());
        *m.requests.get(vec![
            ("provider", provider.clone()),
            ("model", model.clone()),
            ("status", r.status.to_string()),
        ]) += 1;
        for (kind, n) in [
            ("input", r.input_tokens),
            ("output", r.output_tokens),
            ("cache_read", r.cache_read_tokens),
            ("cache_write", r.cache_write_tokens),
        ] {
            if n > 0 {
                *m.tokens.get(vec![
                    ("provider", provider.clone()),
                    ("model", model.clone()),
                    ("kind", kind.to_string()),
                ]) += n;
            }
        }
        if let Some(c) = r.cost_micros.filter(|c| *c > 0) {
            *m.cost_micros.get(vec![
                ("provider", provider.clone()),
                ("model", model.clone()),
                ("team", r.team.clone().unwrap_or_else(|| "-".into())),
            ]) += c;
        }
        if r.price.as_deref() == Some("ceiling") {
            *m.unpriced
                .get(vec![("provider", provider.clone()), ("model", model.clone())]) += 1;
        }
        for f in &r.findings {
            *m.findings
                .get(vec![("category", f.category.clone()), ("mode", f.mode.clone())]) += 1;
        }
        if let Some(class) = r.error_class.as_deref() {
            if REFUSALS.contains(&class) {
                *m.refusals.get(vec![("reason", class.to_string())]) += 1;
            } else if crate::rot::is_upstream_failure(class) || class.starts_with("upstream_") {
                *m.upstream_errors
                    .get(vec![("provider", provider.clone()), ("class", class.to_string())]) += 1;
            }
        }
        m.duration
            .get(vec![("provider", provider.clone())])
            .observe(r.duration_ms / 1e3);
        if let Some(t) = r.ttfb_ms {
            m.ttfb.get(vec![("provider", provider.clone())]).observe(t / 1e3);
        }
        if let Some(t) = r.overhead_ms {
            m.overhead.get(vec![("provider", provider)]).observe(t / 1e3);
        }
        if let Some(t) = r.policy_ms {
            m.policy.get(Vec::new()).observe(t / 1e3);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(16 * 1024);
        counter(
            &mut out,
            "conduit_requests_total",
            "Requests by provider, model and the status the client received.",
            &m.requests,
            1.0,
        );
        counter(
            &mut out,
            "conduit_tokens_total",
            "Tokens billed, by kind (input, output, cache_read, cache_write).",
            &m.tokens,
            1.0,
        );
        counter(
            &mut out,
            "conduit_cost_usd_total",
            "Cost of priced requests, USD.",
            &m.cost_micros,
            1e-6,
        );
        counter(
            &mut out,
            "conduit_unpriced_requests_total",
            "Requests for models with no price, billed at their provider's ceiling; add a price with `conduit prices import FILE`.",
            &m.unpriced,
            1.0,
        );
        counter(
            &mut out,
            "conduit_findings_total",
            "Policy findings by category and mode.",
            &m.findings,
            1.0,
        );
        counter(
            &mut out,
            "conduit_refusals_total",
            "Requests the gateway refused, by reason (budget, rate limit, policy, auth…).",
            &m.refusals,
            1.0,
        );
        counter(
            &mut out,
            "conduit_upstream_errors_total",
            "Upstream failures by class (5xx, 529 overloaded, 429, stream errors, timeouts).",
            &m.upstream_errors,
            1.0,
        );
        histogram(
            &mut out,
            "conduit_request_duration_seconds",
            "Request start to response end.",
            &m.duration,
        );
        histogram(
            &mut out,
            "conduit_ttfb_seconds",
            "Request start to the first response byte sent to the client.",
            &m.ttfb,
        );
        histogram(
            &mut out,
            "conduit_overhead_seconds",
            "Time the gateway spent before the request left for the upstream.",
            &m.overhead,
        );
        histogram(
            &mut out,
            "conduit_policy_evaluation_seconds",
            "Time in the policy stage per request.",
            &m.policy,
        );
        out
    }
}

fn labels(out: &mut String, labels: &Labels, extra: Option<(&str, &str)>) {
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().map(|(k, v)| (*k, v.as_str())).chain(extra) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn counter(out: &mut String, name: &str, help: &str, family: &Family<u64>, scale: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (l, v) in &family.series {
        out.push_str(name);
        labels(out, l, None);
        if scale == 1.0 {
            let _ = writeln!(out, " {v}");
        } else {
            let _ = writeln!(out, " {}", *v as f64 * scale);
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, family: &Family<Histogram>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (l, h) in &family.series {
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(h.counts) {
            cumulative += n;
            let _ = write!(out, "{name}_bucket");
            labels(out, l, Some(("le", &bound.to_string())));
            let _ = writeln!(out, " {cumulative}");
        }
        let _ = write!(out, "{name}_bucket");
        labels(out, l, Some(("le", "+Inf")));
        let _ = writeln!(out, " {}", h.count);
        let _ = write!(out, "{name}_sum");
        labels(out, l, None);
        let _ = writeln!(out, " {}", h.sum);
        let _ = write!(out, "{name}_count");
        labels(out, l, None);
        let _ = writeln!(out, " {}", h.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AuditFinding;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        let r = AuditRecord {
            provider: Some("anthropic".into()),
            model: Some("claude-x".into()),
            status: 200,
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: Some(1_500),
            duration_ms: 3.0,
            overhead_ms: Some(0.2),
            findings: vec![AuditFinding {
                category: "secret.aws".into(),
                rule: "r".into(),
                mode: "alert".into(),
                location: "request".into(),
            }],
            ..AuditRecord::default()
        };
        m.observe(&r);
        m.observe(&AuditRecord {
            status: 402,
            error_class: Some("budget_exceeded".into()),
            ..AuditRecord::default()
        });
        let text = m.render();
        assert!(
            text.contains("conduit_requests_total{provider=\"anthropic\",model=\"claude-x\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(text.contains("conduit_tokens_total{provider=\"anthropic\",model=\"claude-x\",kind=\"output\"} 5"));
        assert!(text.contains("conduit_cost_usd_total{provider=\"anthropic\",model=\"claude-x\",team=\"-\"} 0.0015"));
        assert!(text.contains("conduit_findings_total{category=\"secret.aws\",mode=\"alert\"} 1"));
        assert!(text.contains("conduit_refusals_total{reason=\"budget_exceeded\"} 1"));
        assert!(text.contains("conduit_overhead_seconds_bucket{provider=\"anthropic\",le=\"0.00025\"} 1"));
        assert!(text.contains("conduit_overhead_seconds_bucket{provider=\"anthropic\",le=\"0.0001\"} 0"));
        assert!(text.contains("conduit_request_duration_seconds_count{provider=\"-\"} 1"));
    }

    #[test]
    fn series_are_capped() {
        let m = Metrics::default();
        for i in 0..(MAX_SERIES + 10) {
            m.observe(&AuditRecord {
                model: Some(format!("m{i}")),
                ..AuditRecord::default()
            });
        }
        let text = m.render();
        assert!(text.contains("model=\"_other\""));
        assert_eq!(text.matches("conduit_requests_total{").count(), MAX_SERIES + 1);
    }
}
