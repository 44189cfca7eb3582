//! Prometheus metrics: names `headend_<what>_<unit>[_total]`, base units, bounded labels (never a
//! meter id). One place per event both counts and (where it matters) logs.

use prometheus::{
    exponential_buckets, Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric of the head-end.
pub struct Metrics {
    pub registry: Registry,
    pub mqtt_messages: IntCounter,
    pub mqtt_connected: IntGauge,
    pub mqtt_connection_errors: IntCounter,
    pub mqtt_acks: IntCounter,
    pub mqtt_stale_acks: IntCounter,
    pub dead_letters: IntCounterVec,
    pub readings_received: IntCounter,
    pub readings_stored: IntCounter,
    pub readings_duplicate: IntCounter,
    pub writer_queue_messages: IntGauge,
    pub ingest_held_bytes: IntGauge,
    pub ingest_held_bytes_peak: IntGauge,
    pub ingest_budget_bytes: IntGauge,
    pub writer_batches: IntCounter,
    pub writer_batch_rows: Histogram,
    pub writer_commit_seconds: Histogram,
    pub writer_errors: IntCounterVec,
    pub ingest_delay_seconds: Histogram,
    pub partitions_created: IntCounter,
    pub rollup_hours_refreshed: IntCounter,
    pub maintenance_errors: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_request_seconds: HistogramVec,
    pub poll_sessions: IntCounterVec,
    pub poll_session_seconds: HistogramVec,
    pub poll_in_flight: IntGauge,
    pub poll_buckets_held: IntGauge,
    pub poll_retries: IntCounterVec,
    pub poll_round_seconds: GaugeVec,
    pub poll_round_meters: IntGaugeVec,
    pub clock_flagged: IntCounter,
    pub clock_synced: IntCounter,
    pub read_rate: GaugeVec,
    pub dlms_push: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub logins: IntCounterVec,
    pub http_rejected: IntCounter,
}

/// Label values of `headend_auth_failures_total`: why a request was not authenticated.
pub const AUTH_FAILURES: [&str; 5] = ["bad_token", "bad_session", "csrf", "login_invalid", "login_locked"];

/// Dead-letter reasons; the label values of `headend_dead_letters_total`.
pub const DEAD_LETTER_REASONS: [&str; 11] = [
    "payload_too_large",
    "malformed_json",
    "schema_violation",
    "unknown_meter",
    "unknown_channel",
    "impossible_value",
    "timestamp_out_of_range",
    "topic_not_authorised",
    "store_failed",
    "push_malformed",
    "push_rejected",
];

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone())).expect("metric names are unique and valid");
    m
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(r, IntCounter::new(name, help).expect("valid counter"))
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    reg(r, IntGauge::new(name, help).expect("valid gauge"))
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    reg(r, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid histogram"))
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let latency = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
        ];
        let m = Metrics {
            mqtt_messages: counter(&r, "headend_mqtt_messages_total", "MQTT messages received"),
            mqtt_connected: gauge(&r, "headend_mqtt_connected", "1 while connected to the broker"),
            mqtt_connection_errors: counter(&r, "headend_mqtt_connection_errors_total", "Broker connection failures"),
            mqtt_acks: counter(&r, "headend_mqtt_acks_total", "Messages acknowledged to the broker after commit"),
            mqtt_stale_acks: counter(
                &r,
                "headend_mqtt_stale_acks_total",
                "Committed messages not acknowledged because their connection had gone (the broker redelivers them)",
            ),
            dead_letters: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("headend_dead_letters_total", "Messages refused and kept in dead_letters, by reason"),
                    &["reason"],
                )
                .expect("valid counter"),
            ),
            readings_received: counter(&r, "headend_readings_received_total", "Valid readings queued for storage"),
            readings_stored: counter(&r, "headend_readings_stored_total", "Readings committed (new rows)"),
            readings_duplicate: counter(
                &r,
                "headend_readings_duplicate_total",
                "Readings already stored (redelivered or repeated), ignored",
            ),
            writer_queue_messages: gauge(&r, "headend_writer_queue_messages", "Messages waiting for the writer"),
            ingest_held_bytes: gauge(
                &r,
                "headend_ingest_held_bytes",
                "Bytes of received messages not yet committed (MQTT intake, push listener, polls, writer)",
            ),
            ingest_held_bytes_peak: gauge(
                &r,
                "headend_ingest_held_bytes_peak",
                "Most bytes of received messages held at once since start",
            ),
            ingest_budget_bytes: gauge(
                &r,
                "headend_ingest_budget_bytes",
                "writer.queue_bytes: the most bytes of received messages held before sources wait",
            ),
            writer_batches: counter(&r, "headend_writer_batches_total", "Batches committed"),
            writer_batch_rows: histogram(
                &r,
                "headend_writer_batch_rows",
                "Readings per committed batch",
                exponential_buckets(10.0, 2.5, 12).expect("valid buckets"),
            ),
            writer_commit_seconds: histogram(
                &r,
                "headend_writer_commit_duration_seconds",
                "Time to write and commit one batch",
                latency.clone(),
            ),
            writer_errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("headend_writer_errors_total", "Batch write failures by kind (transient are retried)"),
                    &["kind"],
                )
                .expect("valid counter"),
            ),
            ingest_delay_seconds: histogram(
                &r,
                "headend_ingest_delay_seconds",
                "From the device's send time (payload `sent`) to the commit of its readings",
                latency.clone(),
            ),
            partitions_created: counter(&r, "headend_partitions_created_total", "Daily partitions created"),
            rollup_hours_refreshed: counter(&r, "headend_rollup_hours_refreshed_total", "Hours of rollup recomputed"),
            maintenance_errors: counter(&r, "headend_maintenance_errors_total", "Failed maintenance runs"),
            http_requests: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("headend_http_requests_total", "HTTP requests by matched route and status"),
                    &["route", "status"],
                )
                .expect("valid counter"),
            ),
            http_request_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("headend_http_request_duration_seconds", "HTTP request duration by route")
                        .buckets(latency.clone()),
                    &["route"],
                )
                .expect("valid histogram"),
            ),
            poll_sessions: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "headend_poll_sessions_total",
                        "Polling sessions by protocol and outcome (ok, or the failure's reason)",
                    ),
                    &["protocol", "outcome"],
                )
                .expect("valid counter"),
            ),
            poll_session_seconds: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("headend_poll_session_duration_seconds", "Polling session duration")
                        .buckets(latency),
                    &["protocol"],
                )
                .expect("valid histogram"),
            ),
            poll_in_flight: gauge(&r, "headend_poll_sessions_in_flight", "Polling sessions open now"),
            poll_buckets_held: gauge(&r, "headend_poll_buckets_held", "Polling lease buckets this replica holds"),
            poll_retries: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("headend_poll_retries_total", "Session attempts repeated after a retryable failure"),
                    &["protocol"],
                )
                .expect("valid counter"),
            ),
            poll_round_seconds: reg(
                &r,
                GaugeVec::new(
                    Opts::new("headend_poll_round_duration_seconds", "Duration of the last polling round per group"),
                    &["group"],
                )
                .expect("valid gauge"),
            ),
            poll_round_meters: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("headend_poll_round_meters", "Meters in the last polling round per group, by result"),
                    &["group", "result"],
                )
                .expect("valid gauge"),
            ),
            clock_flagged: counter(
                &r,
                "headend_clock_deviation_flagged_total",
                "Clock reads off by more than collect.clock_threshold",
            ),
            clock_synced: counter(&r, "headend_clock_synced_total", "Meter clocks set by the head-end"),
            read_rate: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "headend_read_rate_ratio",
                        "Yesterday (local) read completeness: share of meters complete, and share of expected \
                         intervals received within 1h/24h/72h of the interval or at all",
                    ),
                    &["measure"],
                )
                .expect("valid gauge"),
            ),
            dlms_push: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("headend_dlms_push_total", "DLMS DataNotifications received, by outcome"),
                    &["outcome"],
                )
                .expect("valid counter"),
            ),
            auth_failures: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "headend_auth_failures_total",
                        "Requests refused or not authenticated, by reason (bad token, bad session, CSRF, login)",
                    ),
                    &["reason"],
                )
                .expect("valid counter"),
            ),
            logins: reg(
                &r,
                IntCounterVec::new(Opts::new("headend_logins_total", "Successful logins, by role"), &["role"])
                    .expect("valid counter"),
            ),
            http_rejected: reg(
                &r,
                IntCounter::new(
                    "headend_http_rejected_total",
                    "Requests refused at once because http.max_concurrent_requests were in progress",
                )
                .expect("valid counter"),
            ),
            registry: r,
        };
        for reason in AUTH_FAILURES {
            m.auth_failures.with_label_values(&[reason]);
        }
        for reason in DEAD_LETTER_REASONS {
            m.dead_letters.with_label_values(&[reason]);
        }
        for kind in ["transient", "permanent"] {
            m.writer_errors.with_label_values(&[kind]);
        }
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let m = Metrics::new();
        m.mqtt_messages.inc();
        let text = m.render();
        assert!(text.contains("headend_mqtt_messages_total 1"));
        assert!(text.contains("headend_dead_letters_total{reason=\"malformed_json\"} 0"));
        for family in m.registry.gather() {
            assert!(family.name().starts_with("headend_"), "{}", family.name());
            for metric in family.get_metric() {
                for l in metric.get_label() {
                    assert!(!l.name().contains("meter"), "no meter labels: {}", family.name());
                }
            }
        }
    }
}
