//! The engine's one event bus. Every change a transport may publish (devices, jobs, model
//! imports) goes out on one broadcast; each subscriber takes the kinds it wants. A subscriber
//! that falls behind gets [`Event::Missed`] once, in place of what it lost, and the rule is
//! the same on every transport: list again (gRPC ends the watch with DATA_LOSS and that
//! message, D-Bus re-reads what it mirrors). Pure plumbing: holds no state of its own.

use crate::jobs::info::JobInfo;
use kiln_hal::DeviceEvent;
use tokio::sync::broadcast;

/// How many events a subscriber may fall behind before it misses some.
const CAPACITY: usize = 1024;

/// One change, as published.
#[derive(Debug, Clone)]
pub enum Event {
    Device(Box<DeviceEvent>),
    Job(Box<JobInfo>),
    /// Bytes copied so far of a running model import.
    ImportProgress {
        model: String,
        done: u64,
        total: u64,
    },
    /// This subscriber fell behind and lost `count` events: list again.
    Missed {
        count: u64,
    },
}

impl Event {
    /// What a transport tells a watcher that missed events.
    pub fn missed_message(count: u64) -> String {
        format!("watcher fell behind and missed {count} events; list again and re-watch")
    }
}

/// The sending side, shared by the hubs that publish.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Publish to whoever listens now (nobody listening is fine).
    pub fn publish(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// One subscriber's view of the bus.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next event; `None` once the engine is gone.
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(Event::Missed { count: n }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// As a stream, for server-streaming calls.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Event> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|e| (e, s)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_what_is_published_after_they_subscribe() {
        let bus = EventBus::default();
        bus.publish(Event::Missed { count: 99 }); // before anyone listens: dropped
        let mut a = bus.subscribe();
        bus.publish(Event::Device(Box::new(DeviceEvent::Removed("npu0".into()))));
        match a.next().await {
            Some(Event::Device(e)) => {
                assert!(matches!(*e, DeviceEvent::Removed(id) if id == "npu0"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_once_then_continues() {
        let bus = EventBus::default();
        let mut slow = bus.subscribe();
        for i in 0..(CAPACITY as u64 + 5) {
            bus.publish(Event::ImportProgress {
                model: "m".into(),
                done: i,
                total: 0,
            });
        }
        assert!(matches!(
            slow.next().await,
            Some(Event::Missed { count: 5 })
        ));
        assert!(matches!(
            slow.next().await,
            Some(Event::ImportProgress { done: 5, .. })
        ));
        assert!(Event::missed_message(5).contains("missed 5 events"));
    }
}
