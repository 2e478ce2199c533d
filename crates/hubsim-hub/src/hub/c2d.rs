//! Cloud-to-device messages (reference §5, IoT Hub's C2D doc): the per-device queue (at most 50), TTL, the
//! lock of a delivered message, completion on PUBACK, redelivery, dead-lettering after the maximum delivery
//! count or expiry, and feedback records for `iothub-ack`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hubsim_proto::property_bag::SystemProperty;
use serde_json::{Map, Value};
use std::time::Duration;

use super::{random_id, ConnCmd, Hub, ServiceError};
use crate::model::{C2dMessage, FeedbackRecord};
use crate::store::{StoreError, Tx};
use crate::timefmt::{iso8601, unix_ms};

/// Parameters of a C2D send.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SendC2d {
    /// Body as text.
    pub body: Option<String>,
    /// Body as base64 (wins over `body`).
    pub body_base64: Option<String>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// `none` (default), `positive`, `negative`, `full`.
    pub ack: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub properties: Map<String, Value>,
}

/// The characters IoT Hub allows in a C2D message's property names and values besides ASCII letters and digits
/// ("Create and read IoT Hub messages": "when you … send cloud-to-device messages, property names and values
/// can only contain ASCII alphanumeric characters, plus ! # $ % & ' * + - . ^ _ ` | ~").
pub const C2D_PROPERTY_SPECIALS: &str = "!#$%&'*+-.^_`|~";

/// The first character of `s` IoT Hub refuses in a C2D property name or value, if any.
fn refused_char(s: &str) -> Option<char> {
    s.chars().find(|c| !c.is_ascii_alphanumeric() && !C2D_PROPERTY_SPECIALS.contains(*c))
}

/// Why an application property of a C2D message is refused, if it is: a character IoT Hub does not allow
/// ([`C2D_PROPERTY_SPECIALS`]), or a name that would read as a system property on the device's topic (`$.…`)
/// or as the hub's own (`iothub-…`, e.g. `iothub-ack`): the device could not tell them apart.
fn app_property_problem(name: &str, value: &Value) -> Option<String> {
    const ALLOWED: &str =
        "IoT Hub's C2D property names and values are ASCII letters, digits and ! # $ % & ' * + - . ^ _ ` | ~";
    let lower = name.to_ascii_lowercase();
    if name.is_empty() {
        return Some("has an empty name".into());
    }
    if let Some(c) = refused_char(name) {
        return Some(format!("has {c:?} in its name; {ALLOWED}"));
    }
    if lower.starts_with("$.") || lower.starts_with("%24.") || lower.starts_with("iothub-") {
        return Some("has a reserved name ('$.' names are system properties, 'iothub-' names the hub's own)".into());
    }
    let text = match value {
        Value::Null => return None,
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        other => std::borrow::Cow::Owned(other.to_string()),
    };
    refused_char(&text).map(|c| format!("has {c:?} in its value; {ALLOWED}"))
}

impl Hub {
    /// Takes the C2D messages deliverable now (not locked, not in `exclude`), locking each and counting the
    /// delivery. Expired messages and those over the delivery limit are dead-lettered on the way.
    pub async fn c2d_take(&self, device: &str, exclude: Vec<u64>) -> Result<Vec<C2dMessage>, StoreError> {
        let id = device.to_owned();
        let lock = self.settings.c2d_lock.as_millis() as u64;
        let max = self.settings.c2d_max_delivery_count;
        self.store
            .write(move |tx| {
                let now = unix_ms();
                let mut out = Vec::new();
                for m in tx.c2d_queue(&id)? {
                    if exclude.contains(&m.seq) || m.lock_until_ms.is_some_and(|l| l > now) {
                        continue;
                    }
                    out.extend(lock_for_delivery(tx, m, now, lock, max)?);
                }
                Ok(out)
            })
            .await
    }

    /// Re-locks an in-flight message for redelivery on the same connection; `None` if it is gone or used up.
    pub async fn c2d_relock(&self, device: &str, seq: u64) -> Result<Option<C2dMessage>, StoreError> {
        let id = device.to_owned();
        let lock = self.settings.c2d_lock.as_millis() as u64;
        let max = self.settings.c2d_max_delivery_count;
        self.store
            .write(move |tx| match tx.get_c2d(&id, seq)? {
                Some(m) => lock_for_delivery(tx, m, unix_ms(), lock, max),
                None => Ok(None),
            })
            .await
    }

    /// The device acknowledged a message: it is completed (removed), with positive feedback if requested.
    pub async fn c2d_complete(&self, device: &str, seq: u64) -> Result<(), StoreError> {
        let id = device.to_owned();
        self.store
            .write(move |tx| {
                if let Some(m) = tx.remove_c2d(&id, seq)? {
                    if m.ack == "positive" || m.ack == "full" {
                        feedback(tx, &m, "Success", "Success")?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Unlocks messages that were in flight on a closed connection so the next one gets them at once.
    pub async fn c2d_release(&self, device: &str, seqs: Vec<u64>) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let id = device.to_owned();
        self.store
            .write(move |tx| {
                for s in seqs {
                    if let Some(mut m) = tx.get_c2d(&id, s)? {
                        m.lock_until_ms = None;
                        tx.put_c2d(&m)?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Empties a device's C2D queue (IoT Hub's `DELETE /devices/{id}/commands`), recording `Purged` feedback for
    /// messages that asked for it; returns how many were removed.
    pub async fn purge_c2d(&self, id: &str) -> Result<usize, ServiceError> {
        self.get_device(id).await?;
        let key = id.to_owned();
        Ok(self
            .store
            .write(move |tx| {
                // Messages already expired are dead-lettered as such, not counted as purged.
                let queue = expire_queue(tx, &key, unix_ms())?;
                for m in &queue {
                    tx.remove_c2d(&key, m.seq)?;
                    if m.ack == "negative" || m.ack == "full" {
                        feedback(tx, m, "Purged", "the queue was purged through the service API")?;
                    }
                }
                Ok(queue.len())
            })
            .await?)
    }

    /// Queues a C2D message (at most `c2d_max_queue` per device).
    pub async fn send_c2d(&self, id: &str, req: SendC2d) -> Result<C2dMessage, ServiceError> {
        self.get_device(id).await?;
        let body = match (&req.body_base64, &req.body) {
            (Some(b), _) => {
                STANDARD.decode(b).map_err(|e| ServiceError::new(400, 400004, format!("bodyBase64: {e}")))?
            }
            (None, Some(t)) => t.clone().into_bytes(),
            (None, None) => Vec::new(),
        };
        // IoT Hub: message ids (and the other id-like system properties) are at most 128 characters.
        for (name, v) in [
            ("messageId", &req.message_id),
            ("correlationId", &req.correlation_id),
            ("userId", &req.user_id),
            ("contentType", &req.content_type),
            ("contentEncoding", &req.content_encoding),
        ] {
            if v.as_ref().is_some_and(|v| v.len() > MAX_ID_LEN) {
                return Err(ServiceError::new(400, 400004, format!("{name} is longer than {MAX_ID_LEN} characters")));
            }
        }
        // IoT Hub's limit covers the body and the properties together (C2D doc: "maximum size 64 KB").
        let props_size: usize = req.properties.iter().map(|(k, v)| k.len() + v.as_str().map_or(8, str::len)).sum();
        let system_size: usize =
            [&req.message_id, &req.correlation_id, &req.user_id, &req.content_type, &req.content_encoding]
                .iter()
                .map(|v| v.as_ref().map_or(0, |s| s.len()))
                .sum();
        let total = body.len() + props_size + system_size;
        if total > MAX_C2D_SIZE {
            return Err(ServiceError::new(
                400,
                400005,
                format!("the message is {total} bytes with its properties; C2D messages are at most 64 KB"),
            ));
        }
        for (k, v) in &req.properties {
            if let Some(why) = app_property_problem(k, v) {
                return Err(ServiceError::new(400, 400004, format!("property '{}' {why}", super::truncate(k, 64))));
            }
        }
        // The other system properties: printable ASCII (they go into the device's topic and its property bag).
        for (name, v) in [
            ("correlationId", &req.correlation_id),
            ("userId", &req.user_id),
            ("contentType", &req.content_type),
            ("contentEncoding", &req.content_encoding),
        ] {
            if let Some(c) = v.as_deref().and_then(|v| v.chars().find(|c| !(' '..='~').contains(c))) {
                return Err(ServiceError::new(400, 400004, format!("{name} has {c:?}; it must be printable ASCII")));
            }
        }
        if req.message_id.as_deref() == Some("") {
            return Err(ServiceError::new(400, 400004, "messageId is empty (leave it out for a generated one)"));
        }
        // MessageId: "ASCII 7-bit alphanumeric characters + - : . + % _ # * ? ! ( ) , = @ ; $ '" (same doc).
        if let Some(c) = req
            .message_id
            .as_deref()
            .and_then(|m| m.chars().find(|c| !c.is_ascii_alphanumeric() && !"-:.+%_#*?!(),=@;$'".contains(*c)))
        {
            return Err(ServiceError::new(
                400,
                400004,
                format!("messageId has {c:?}; IoT Hub's message ids are ASCII letters, digits and - : . + % _ # * ? ! ( ) , = @ ; $ '"),
            ));
        }
        let ack = req.ack.clone().unwrap_or_else(|| "none".into()).to_ascii_lowercase();
        if !["none", "positive", "negative", "full"].contains(&ack.as_str()) {
            return Err(ServiceError::new(
                400,
                400004,
                format!("ack must be none, positive, negative or full, not '{ack}'"),
            ));
        }
        let mut properties = Vec::new();
        for (k, v) in &req.properties {
            let v = match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            };
            properties.push((k.clone(), v));
        }
        let now = unix_ms();
        let ttl = match req.ttl_seconds {
            Some(s) if (1..=MAX_C2D_TTL_SECS).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                return Err(ServiceError::new(
                    400,
                    400004,
                    format!("ttlSeconds must be 1 to {MAX_C2D_TTL_SECS} (IoT Hub's two days), not {s}"),
                ))
            }
            None => self.settings.c2d_default_ttl,
        };
        let mut msg = C2dMessage {
            seq: 0,
            device_id: id.to_owned(),
            message_id: req.message_id.clone().unwrap_or_else(random_id),
            correlation_id: req.correlation_id.clone(),
            user_id: req.user_id.clone(),
            content_type: req.content_type.clone(),
            content_encoding: req.content_encoding.clone(),
            ack,
            properties,
            body,
            enqueued_ms: now,
            expiry_ms: now.saturating_add(ttl.as_millis() as u64),
            delivery_count: 0,
            lock_until_ms: None,
        };
        let max = self.settings.c2d_max_queue;
        let key = id.to_owned();
        let stored = self
            .store
            .write(move |tx| {
                // Expired messages leave the queue first (dead-lettered, with their feedback): they no longer
                // count toward the limit, as in IoT Hub.
                let n = expire_queue(tx, &key, unix_ms())?.len();
                if n >= max {
                    return Ok(Err(n));
                }
                msg.seq = tx.next_seq("c2d")?;
                tx.put_c2d(&msg)?;
                Ok(Ok(msg))
            })
            .await?;
        let msg = stored.map_err(|n| {
            ServiceError::new(
                403,
                403004,
                format!(
                    "the queue of device '{id}' is full ({n} messages, the limit is {max}); it must receive some first"
                ),
            )
        })?;
        if let Some(h) = self.conn(id) {
            // A full queue already holds work that makes the task look at the C2D queue again.
            let _ = h.try_send(ConnCmd::C2dAvailable);
        }
        Ok(msg)
    }
}

/// How often the hub looks for expired C2D messages in every queue ([`c2d_sweeper`]): IoT Hub dead-letters a
/// message when its expiry passes ("Message expiration (time to live)"), with `Expired` feedback, also for a device
/// that stays offline. Between sweeps an expired message is already left out of every count and listing, and a
/// send removes its device's expired messages before checking the queue's depth.
pub const C2D_SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Queued messages looked at per store transaction of a sweep (each decodes only the expiry), so a sweep never
/// holds the writer long, whatever the number of queued messages.
pub const C2D_SWEEP_STEP: usize = 1024;

impl Hub {
    /// One step of the sweep of expired C2D messages: looks at up to [`C2D_SWEEP_STEP`] queued messages after
    /// the key `after` (from the first with `None`) and dead-letters those whose expiry passed, with `Expired`
    /// feedback when their `ack` asks for it. Returns where the next step starts, `None` once the end is reached.
    pub async fn c2d_sweep_step(&self, after: Option<(String, u64)>) -> Result<Option<(String, u64)>, StoreError> {
        self.store
            .write(move |tx| {
                let now = unix_ms();
                let seen = tx.c2d_expiries(after.as_ref().map(|(d, s)| (d.as_str(), *s)), C2D_SWEEP_STEP)?;
                let next = (seen.len() == C2D_SWEEP_STEP).then(|| seen.last().map(|(d, s, _)| (d.clone(), *s)));
                for (device, seq, expiry) in seen {
                    if expiry <= now {
                        if let Some(m) = tx.get_c2d(&device, seq)? {
                            dead_letter(tx, &m, "Expired", EXPIRED)?;
                        }
                    }
                }
                Ok(next.flatten())
            })
            .await
    }
}

/// Sweeps every C2D queue for expired messages every `every` ([`C2D_SWEEP_EVERY`]), step by step, until the
/// task is stopped. A failed step is logged and the sweep starts over at the next period.
pub async fn c2d_sweeper(hub: std::sync::Arc<Hub>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let mut at = None;
        loop {
            match hub.c2d_sweep_step(at).await {
                Ok(Some(next)) => at = Some(next),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("the sweep of expired C2D messages failed: {e}");
                    break;
                }
            }
        }
    }
}

/// The feedback description of an expired message.
const EXPIRED: &str = "the message expired before it was completed";

/// The device's queue after its expired messages were dead-lettered (with `Expired` feedback when their `ack`
/// asks for it): the messages still alive at `now` (Unix ms), in order.
fn expire_queue(tx: &mut Tx<'_>, device: &str, now: u64) -> Result<Vec<C2dMessage>, StoreError> {
    let mut alive = Vec::new();
    for m in tx.c2d_queue(device)? {
        if m.expiry_ms <= now {
            dead_letter(tx, &m, "Expired", EXPIRED)?;
        } else {
            alive.push(m);
        }
    }
    Ok(alive)
}

/// Largest C2D message, body and properties, bytes (IoT Hub: 64 KB).
pub const MAX_C2D_SIZE: usize = 64 * 1024;
/// Most bytes of `messageId`, `correlationId`, `userId`, `contentType`, `contentEncoding` (IoT Hub: 128).
pub const MAX_ID_LEN: usize = 128;
/// Longest C2D time to live, seconds (IoT Hub: two days).
pub const MAX_C2D_TTL_SECS: u64 = 2 * 24 * 3600;

/// Counts a delivery and locks the message for `lock` ms; an expired message, or one that reached the maximum
/// delivery count, is dead-lettered instead (`None`).
fn lock_for_delivery(
    tx: &mut Tx<'_>,
    mut m: C2dMessage,
    now: u64,
    lock: u64,
    max: u32,
) -> Result<Option<C2dMessage>, StoreError> {
    if m.expiry_ms <= now {
        dead_letter(tx, &m, "Expired", EXPIRED)?;
        return Ok(None);
    }
    if m.delivery_count >= max {
        dead_letter(tx, &m, "DeliveryCountExceeded", "the maximum delivery count was reached")?;
        return Ok(None);
    }
    m.delivery_count += 1;
    m.lock_until_ms = Some(now + lock);
    tx.put_c2d(&m)?;
    Ok(Some(m))
}

fn dead_letter(tx: &mut Tx<'_>, m: &C2dMessage, status: &str, why: &str) -> Result<(), StoreError> {
    tx.remove_c2d(&m.device_id, m.seq)?;
    if m.ack == "negative" || m.ack == "full" {
        feedback(tx, m, status, why)?;
    }
    Ok(())
}

fn feedback(tx: &mut Tx<'_>, m: &C2dMessage, status: &str, why: &str) -> Result<(), StoreError> {
    let rec = FeedbackRecord {
        seq: tx.next_seq("feedback")?,
        original_message_id: m.message_id.clone(),
        device_id: m.device_id.clone(),
        status_code: status.into(),
        description: why.into(),
        enqueued_time_utc: iso8601(unix_ms()),
    };
    tx.append_feedback(&rec)
}

/// Builds the property bag of a C2D delivery (reference §5).
pub fn c2d_properties(m: &C2dMessage) -> hubsim_proto::PropertyBag {
    let mut bag = hubsim_proto::PropertyBag::new();
    bag.set_system(SystemProperty::MessageId, m.message_id.clone());
    bag.set_system(SystemProperty::To, hubsim_proto::DeviceIdentity::device(&m.device_id).c2d_to());
    if let Some(v) = &m.correlation_id {
        bag.set_system(SystemProperty::CorrelationId, v.clone());
    }
    if let Some(v) = &m.user_id {
        bag.set_system(SystemProperty::UserId, v.clone());
    }
    if let Some(v) = &m.content_type {
        bag.set_system(SystemProperty::ContentType, v.clone());
    }
    if let Some(v) = &m.content_encoding {
        bag.set_system(SystemProperty::ContentEncoding, v.clone());
    }
    bag.set_system(SystemProperty::ExpiryTime, iso8601(m.expiry_ms));
    bag.set_system(SystemProperty::Ack, m.ack.clone());
    bag.application = m.properties.clone();
    bag
}
