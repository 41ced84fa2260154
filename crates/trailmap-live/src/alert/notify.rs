//! Webhook notifications in Alertmanager's webhook format (`"version": "4"`), so anything
//! that takes Alertmanager's webhooks (chat bridges, incident tools) takes trailmap's.
//!
//! Times in the payload are event time: when the data says the dip began, which is what
//! matters to whoever reads it, even on a replay.

use super::{Change, Notice};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trailmap_mine::report::micros_string;

/// Alertmanager's `endsAt` for an alert still firing: the zero time.
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";

/// Alertmanager's fingerprint of a label set: FNV-1a (64 bit) over the sorted names and
/// values, each followed by a separator byte.
fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, value) in labels {
        for b in name
            .bytes()
            .chain([0xff])
            .chain(value.bytes())
            .chain([0xff])
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The JSON body Alertmanager would POST to a webhook receiver for this notice.
pub fn payload(notice: &Notice, external_url: &str) -> Value {
    let status = match notice.change {
        Change::Firing => "firing",
        Change::Resolved => "resolved",
    };
    let alertname = notice.labels.get("alertname").cloned().unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{alertname}\"}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "trailmap",
        "groupLabels": { "alertname": alertname },
        "commonLabels": notice.labels,
        "commonAnnotations": notice.annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": status,
            "labels": notice.labels,
            "annotations": notice.annotations,
            "startsAt": micros_string(notice.starts_at),
            "endsAt": notice.ends_at.map_or(NOT_ENDED.to_string(), micros_string),
            "generatorURL": format!("{}/api/alerts", external_url.trim_end_matches('/')),
            "fingerprint": fingerprint(&notice.labels),
        }],
    })
}

/// Where notifications go and how hard to try.
#[derive(Debug, Clone)]
pub struct Webhooks {
    pub urls: Vec<String>,
    /// Retries after the first attempt, waiting `backoff`, then twice that, and so on.
    pub retries: u32,
    pub backoff: Duration,
    /// Where the dashboard is, for the payload's links.
    pub external_url: String,
}

impl Webhooks {
    /// Posts the notice to every webhook, retrying each (no more retries once `stopping`
    /// is set); the URLs that still failed, with why. Blocking: run it off the async
    /// runtime.
    pub fn deliver(&self, notice: &Notice, stopping: &AtomicBool) -> Vec<(String, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let body = payload(notice, &self.external_url);
        let mut failed = Vec::new();
        for url in &self.urls {
            let mut wait = self.backoff;
            let mut attempt = 0;
            loop {
                match agent.post(url).send_json(&body) {
                    Ok(_) => break,
                    Err(e) if attempt >= self.retries || stopping.load(Ordering::Relaxed) => {
                        failed.push((url.clone(), e.to_string()));
                        break;
                    }
                    Err(_) => {
                        // Waits in short steps, so a stop does not wait out the backoff.
                        let until = std::time::Instant::now() + wait;
                        while std::time::Instant::now() < until && !stopping.load(Ordering::Relaxed)
                        {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        wait = wait.saturating_mul(2);
                        attempt += 1;
                    }
                }
            }
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_shaped_like_alertmanagers() {
        let mut labels = BTreeMap::new();
        labels.insert("alertname".to_string(), "checkout_dip".to_string());
        labels.insert("journey".to_string(), "trial".to_string());
        let notice = Notice {
            value: None,
            alert: "checkout_dip".into(),
            change: Change::Resolved,
            starts_at: 1_700_000_000_000_000,
            ends_at: Some(1_700_000_600_000_000),
            labels: labels.clone(),
            annotations: BTreeMap::new(),
        };
        let p = payload(&notice, "http://127.0.0.1:8080/");
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["groupLabels"]["alertname"], "checkout_dip");
        let alert = &p["alerts"][0];
        assert_eq!(alert["labels"]["journey"], "trial");
        assert_eq!(alert["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(alert["endsAt"], "2023-11-14T22:23:20Z");
        assert_eq!(alert["generatorURL"], "http://127.0.0.1:8080/api/alerts");
        // Fingerprints depend on the labels only.
        let fp = alert["fingerprint"].as_str().unwrap().to_string();
        assert_eq!(fp.len(), 16);
        assert_eq!(fingerprint(&labels), fp);
        labels.insert("team".into(), "growth".into());
        assert_ne!(fingerprint(&labels), fp);
        let firing = Notice {
            change: Change::Firing,
            ends_at: None,
            ..notice
        };
        assert_eq!(payload(&firing, "")["alerts"][0]["endsAt"], NOT_ENDED);
    }
}
