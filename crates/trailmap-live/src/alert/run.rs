//! The live evaluator: a task that evaluates every rule at each interval of event time the
//! pipeline passes, and a thread that delivers notifications (blocking HTTP with backoff
//! stays off the runtime that counts events).

use super::notify::Webhooks;
use super::{AlertStatus, Alerts, Change, Notice, when};
use crate::counts::bucket_of;
use crate::pipeline::LiveHandle;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use trailmap_model::{Error, Result};

/// How often the evaluator looks at the pipeline's event time.
const TICK: Duration = Duration::from_millis(200);
/// Evaluations per round at most: catching up (a replay, a restart) goes round after round,
/// yielding between them, so the shards' other work is never held for long.
const MAX_PER_TICK: usize = 500;

/// The running alerts: their statuses for the API, and how to stop them.
#[derive(Clone)]
pub struct AlertsHandle {
    alerts: Arc<Mutex<Alerts>>,
    stop: Arc<Mutex<Option<Running>>>,
}

/// What stopping waits for.
struct Running {
    stop: oneshot::Sender<()>,
    evaluator: JoinHandle<()>,
    notifier: std::thread::JoinHandle<()>,
    /// Tells the notifier to stop retrying.
    stopping: Arc<AtomicBool>,
}

impl AlertsHandle {
    /// Every rule's state, in config order.
    pub fn statuses(&self) -> Vec<AlertStatus> {
        self.alerts
            .lock()
            .map(|a| a.statuses().to_vec())
            .unwrap_or_default()
    }

    /// Evaluates what is still due, stops evaluating, and waits until the notifications
    /// are delivered: each webhook gets one more attempt (at most its 10 s timeout) and
    /// what still fails stays in the state file's outbox for the next run, as does
    /// whatever a crash interrupts.
    pub async fn stop(&self) {
        let taken = self.stop.lock().ok().and_then(|mut s| s.take());
        if let Some(running) = taken {
            let _ = running.stop.send(());
            // The evaluator holds the outbox's sender: once it ends, the notifier drains
            // the outbox (one attempt per webhook from now on) and ends too.
            let _ = running.evaluator.await;
            running.stopping.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || running.notifier.join()).await;
        }
    }
}

/// Starts evaluating `alerts` on the pipeline behind `live` (held weakly: the evaluator
/// never keeps a finished pipeline alive), delivering to `webhooks`. Notifications left
/// undelivered by a previous run are sent first.
pub fn spawn(alerts: Alerts, live: Weak<LiveHandle>, webhooks: Webhooks) -> Result<AlertsHandle> {
    let (outbox_tx, outbox_rx) = std::sync::mpsc::channel::<Notice>();
    for n in alerts.outbox() {
        let _ = outbox_tx.send(n.clone());
    }
    let alerts = Arc::new(Mutex::new(alerts));
    let delivering = alerts.clone();
    let stopping = Arc::new(AtomicBool::new(false));
    let notifier_stopping = stopping.clone();
    let notifier = std::thread::Builder::new()
        .name("trailmap-alert-notify".into())
        .spawn(move || {
            for notice in outbox_rx {
                let failed = if webhooks.urls.is_empty() {
                    Vec::new()
                } else {
                    webhooks.deliver(&notice, &notifier_stopping)
                };
                if !failed.is_empty() && notifier_stopping.load(Ordering::Relaxed) {
                    // Stopping: no more retries now; it stays in the outbox for the next run.
                    for (url, why) in failed {
                        eprintln!(
                            "alert {}: webhook {url} failed ({why}); kept for the next run",
                            notice.alert
                        );
                    }
                    continue;
                }
                for (url, why) in failed {
                    eprintln!(
                        "alert {}: giving up on webhook {url} after {} retries: {why}",
                        notice.alert, webhooks.retries
                    );
                }
                if let Ok(mut a) = delivering.lock()
                    && let Err(e) = a.delivered(&notice)
                {
                    eprintln!("alert {}: cannot save the alert state: {e}", notice.alert);
                }
            }
        })
        .map_err(|e| Error::Other(format!("cannot start the alert notifier thread: {e}")))?;
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let evaluating = alerts.clone();
    let task = tokio::spawn(async move {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(TICK) => false,
                _ = &mut stop_rx => true,
            };
            let Some(live) = live.upgrade() else {
                return;
            };
            loop {
                match evaluate_due(&evaluating, &live, &outbox_tx).await {
                    Ok(0) => break,
                    // A full round: more is due (a replay, a restart, a lagging
                    // evaluator); go on after letting the shards' other work through.
                    Ok(n) if n == MAX_PER_TICK => tokio::task::yield_now().await,
                    Ok(_) => break,
                    Err(e) => {
                        eprintln!("alerts: evaluation failed: {e}");
                        break;
                    }
                }
            }
            if stopping {
                return;
            }
        }
    });
    Ok(AlertsHandle {
        alerts,
        stop: Arc::new(Mutex::new(Some(Running {
            stop: stop_tx,
            evaluator: task,
            notifier,
            stopping,
        }))),
    })
}

/// Runs the evaluations due now (at most [`MAX_PER_TICK`]); how many ran.
async fn evaluate_due(
    alerts: &Mutex<Alerts>,
    live: &LiveHandle,
    outbox: &std::sync::mpsc::Sender<Notice>,
) -> Result<usize> {
    // Evaluations are never taken back, so they wait until the counts up to them are
    // complete: late events and slower partitions have had their chance.
    let Some(newest) = live.complete_until() else {
        return Ok(0);
    };
    let (due, detectors) = match alerts.lock() {
        Ok(a) => (a.due(newest, MAX_PER_TICK), a.detectors().to_vec()),
        Err(_) => return Ok(0),
    };
    let mut ran = 0;
    for (i, at) in due {
        let d = &detectors[i];
        let (current, baseline) = d.windows(at);
        let (as_of, by_value) = (bucket_of(at), d.rule.breakdown.is_some());
        let now = live
            .funnel_levels(d.funnel, vec![current], as_of, by_value)
            .await?;
        let before = live
            .funnel_levels(d.funnel, baseline, as_of, by_value)
            .await?;
        // Named after the levels are read: names only grow, and a value is named before
        // its first event reaches a shard, so every id in the levels has its name.
        let values = if by_value {
            live.names().values
        } else {
            Vec::new()
        };
        let judged = match alerts.lock() {
            Ok(mut a) => a.apply(i, at, &now, &before, &values),
            Err(_) => return Ok(ran),
        };
        ran += 1;
        for (e, notice) in judged {
            let Some(n) = notice else { continue };
            let what = match n.change {
                Change::Firing => "FIRING",
                Change::Resolved => "resolved",
            };
            let value = n
                .value
                .as_ref()
                .map_or(String::new(), |v| format!(" [{v}]"));
            eprintln!(
                "alert {}{value} {what} at {}: {}",
                d.name,
                when(at),
                e.reason
            );
            let _ = outbox.send(n);
        }
    }
    Ok(ran)
}
