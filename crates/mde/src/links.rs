//! Defender portal links: device page, device timeline, and an advanced hunting link that
//! opens a query (UTF-16LE → gzip → base64url without padding).

use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use culprit_model::Timestamp;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use url::Url;

/// The portal's preset time ranges for advanced hunting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeRangeId {
    Day,
    Week,
    Month,
}

impl TimeRangeId {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeRangeId::Day => "day",
            TimeRangeId::Week => "week",
            TimeRangeId::Month => "month",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("portal URL `{0}` cannot hold a path")]
    BadPortal(String),
    #[error("cannot compress the query: {0}")]
    Compress(String),
    #[error("encoded query is not base64: {0}")]
    Base64(String),
    #[error("encoded query is not gzip: {0}")]
    Gzip(String),
    #[error("decoded query is larger than {0} bytes")]
    TooLarge(usize),
    #[error("decoded query is not UTF-16LE text: {0}")]
    Utf16(String),
}

/// Decoded queries are capped: a link is user input and gzip can expand a lot.
const MAX_DECODED: usize = 4 * 1024 * 1024;

fn with_path(portal: &Url, segments: &[&str]) -> Result<Url, LinkError> {
    let mut url = portal.clone();
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| LinkError::BadPortal(portal.to_string()))?;
        path.pop_if_empty();
        // Each segment is percent-encoded by the url crate, so an id cannot add a path.
        path.extend(segments);
    }
    Ok(url)
}

/// `{portal}/machines/{device_id}`.
pub fn device_page(portal: &Url, device_id: &str) -> Result<Url, LinkError> {
    with_path(portal, &["machines", device_id])
}

/// `{portal}/machines/{device_id}/timeline?from=..&to=..` (millisecond ISO times).
pub fn device_timeline(
    portal: &Url,
    device_id: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<Url, LinkError> {
    let mut url = with_path(portal, &["machines", device_id, "timeline"])?;
    url.query_pairs_mut()
        .append_pair("from", &from.to_millis_string())
        .append_pair("to", &to.to_millis_string());
    Ok(url)
}

/// `{portal}/v2/advanced-hunting?query=<encoded>&timeRangeId=<id>`.
pub fn advanced_hunting(
    portal: &Url,
    query: &str,
    time_range_id: TimeRangeId,
) -> Result<Url, LinkError> {
    let mut url = with_path(portal, &["v2", "advanced-hunting"])?;
    url.query_pairs_mut()
        .append_pair("query", &encode(query)?)
        .append_pair("timeRangeId", time_range_id.as_str());
    Ok(url)
}

/// Query text → UTF-16LE → gzip → base64url without padding.
pub fn encode(query: &str) -> Result<String, LinkError> {
    let utf16: Vec<u8> = query.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&utf16)
        .map_err(|e| LinkError::Compress(e.to_string()))?;
    let bytes = gz
        .finish()
        .map_err(|e| LinkError::Compress(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Inverse of [`encode`]. Also accepts the standard alphabet and `=` padding seen in the wild.
pub fn decode(encoded: &str) -> Result<String, LinkError> {
    let normalised: String = encoded
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            other => other,
        })
        .collect();
    let gz = URL_SAFE_NO_PAD
        .decode(normalised)
        .map_err(|e| LinkError::Base64(e.to_string()))?;
    let mut raw = Vec::new();
    GzDecoder::new(gz.as_slice())
        .take(MAX_DECODED as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| LinkError::Gzip(e.to_string()))?;
    if raw.len() > MAX_DECODED {
        return Err(LinkError::TooLarge(MAX_DECODED));
    }
    if raw.len() % 2 != 0 {
        return Err(LinkError::Utf16("odd number of bytes".to_owned()));
    }
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    String::from_utf16(&units).map_err(|e| LinkError::Utf16(e.to_string()))
}
