//! [`Message`] ⇄ AMQP properties.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::{BusError, HEADER_ATTEMPT, HEADER_REASON, Message};

/// Persistent delivery mode.
const PERSISTENT: u8 = 2;

/// Header prefixes the broker adds when it dead-letters; bookkeeping, not the sender's headers.
const BROKER_HEADERS: [&str; 4] = [
    "x-death",
    "x-first-death-",
    "x-last-death-",
    "x-delivery-count",
];

pub(crate) fn short(field: &str, value: &str) -> Result<ShortString, BusError> {
    ShortString::try_new(value).map_err(|e| BusError::InvalidInput {
        field: field.to_owned(),
        reason: e.to_string(),
    })
}

/// Properties of a persistent message; `attempt` > 1 is recorded for the next consumer.
pub(crate) fn properties(msg: &Message, attempt: u32) -> Result<BasicProperties, BusError> {
    let mut headers = FieldTable::default();
    for (key, value) in &msg.headers {
        let key = short(&format!("header {key:?}"), key)?;
        headers.insert(key, AMQPValue::LongString(LongString::from(value.as_str())));
    }
    if attempt > 1 {
        headers.insert(
            ShortString::from(HEADER_ATTEMPT),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut props = BasicProperties::default()
        .with_message_id(short("message_id", &msg.message_id)?)
        .with_delivery_mode(PERSISTENT)
        .with_timestamp(now)
        .with_headers(headers);
    if let Some(priority) = msg.priority {
        props = props.with_priority(priority);
    }
    Ok(props)
}

/// The message and its attempt number (1 unless it went through a retry queue).
pub(crate) fn message(props: &BasicProperties, payload: Vec<u8>) -> (Message, u32) {
    let mut headers = BTreeMap::new();
    let mut attempt = 1;
    if let Some(table) = props.headers() {
        for (key, value) in table {
            let key = key.as_str();
            if key == HEADER_ATTEMPT {
                attempt = as_u32(value).unwrap_or(1).max(1);
            } else if !BROKER_HEADERS.iter().any(|p| key.starts_with(p))
                && let Some(text) = as_text(value)
            {
                headers.insert(key.to_owned(), text);
            }
        }
    }
    let message = Message {
        message_id: props
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_default(),
        payload,
        headers,
        priority: *props.priority(),
    };
    (message, attempt)
}

/// Why a dead letter is there: our header, else the broker's first death reason
/// (`rejected`, `expired`, [`crate::DELIVERY_LIMIT_REASON`], ...).
pub(crate) fn dead_reason(props: &BasicProperties, message: &Message) -> String {
    if let Some(reason) = message.header(HEADER_REASON) {
        return reason.to_owned();
    }
    props
        .headers()
        .as_ref()
        .and_then(|t| t.inner().get("x-first-death-reason"))
        .and_then(as_text)
        .unwrap_or_else(|| "unknown".to_owned())
}

fn as_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        other => as_i64(other).map(|n| n.to_string()),
    }
}

fn as_u32(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        other => as_i64(other).and_then(|n| u32::try_from(n).ok()),
    }
}

fn as_i64(value: &AMQPValue) -> Option<i64> {
    Some(match *value {
        AMQPValue::ShortShortInt(n) => i64::from(n),
        AMQPValue::ShortShortUInt(n) => i64::from(n),
        AMQPValue::ShortInt(n) => i64::from(n),
        AMQPValue::ShortUInt(n) => i64::from(n),
        AMQPValue::LongInt(n) => i64::from(n),
        AMQPValue::LongUInt(n) => i64::from(n),
        AMQPValue::LongLongInt(n) => n,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_id_headers_priority_and_attempt() {
        let msg = Message::new("vectra:t1:42:1", b"payload".to_vec())
            .with_header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .with_priority(7);
        let props = properties(&msg, 3).unwrap();
        assert_eq!(*props.delivery_mode(), Some(PERSISTENT));
        let (back, attempt) = message(&props, msg.payload.clone());
        assert_eq!(back, msg);
        assert_eq!(attempt, 3);
    }

    #[test]
    fn broker_headers_are_dropped_and_first_reason_read() {
        let mut table = FieldTable::default();
        table.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("delivery_limit".into()),
        );
        table.insert("x-death".into(), AMQPValue::FieldArray(vec![].into()));
        table.insert("schema".into(), AMQPValue::LongLongInt(2));
        let props = BasicProperties::default().with_headers(table);
        let (msg, attempt) = message(&props, vec![]);
        assert_eq!(attempt, 1);
        assert_eq!(msg.headers.len(), 1, "{:?}", msg.headers);
        assert_eq!(msg.header("schema"), Some("2"));
        assert_eq!(dead_reason(&props, &msg), crate::DELIVERY_LIMIT_REASON);
    }

    #[test]
    fn oversized_names_are_errors_not_panics() {
        let msg = Message::new("k", vec![]).with_header("h".repeat(300), "v");
        assert!(matches!(
            properties(&msg, 1),
            Err(BusError::InvalidInput { .. })
        ));
    }
}
