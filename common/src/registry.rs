//! Avro encoding and decoding through a Confluent-compatible schema registry, in the Confluent
//! wire format: a magic byte 0, the schema id (4 bytes, big-endian), the Avro datum.
//!
//! The encoder registers `schemas/bid.avsc` under `<topic>-value` on first use and caches the id;
//! the decoder fetches each writer schema by the id in the message, once, and reads the datum
//! with it.
//!
//! What must hold, because the consumers act on it: a failure to reach or use the registry —
//! any HTTP status, transport error or timeout — is [`CodecError::Registry`], which callers hold
//! and retry; it is never cached, so the next attempt asks again. Only a message malformed in
//! itself ([`CodecError::Malformed`], [`CodecError::Record`]) may be passed over.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use base64::Engine;
use serde::Deserialize;

use crate::avro::{self, RecordError, BID_SCHEMA};
use crate::config::RegistryConfig;
use crate::domain::Bid;

/// The first byte of every message in the Confluent wire format.
const MAGIC: u8 = 0;
const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached, or answered something other than the schema: hold
    /// the message and try again; the bytes may be fine.
    #[error("schema registry: {0}")]
    Registry(String),
    /// The bytes are not a bid in the wire format, or do not decode with the schema they name.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The record decoded but breaks a bid rule.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A valid bid could not be encoded with the bid schema (a defect, not an input error).
    #[error("cannot encode the bid: {0}")]
    Encode(String),
}

impl CodecError {
    /// Whether trying again later may succeed (the registry may come back).
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::Registry(_))
    }
}

/// A thin client of the Confluent schema registry API (`/subjects`, `/schemas/ids`).
#[derive(Clone)]
struct RegistryClient {
    http: reqwest::Client,
    base: String,
    /// The base without credentials: what messages show.
    shown_base: String,
}

#[derive(Deserialize)]
struct IdAnswer {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaAnswer {
    schema: String,
}

impl RegistryClient {
    fn new(config: &RegistryConfig) -> Result<Self, CodecError> {
        let http = http_client(config).map_err(CodecError::Registry)?;
        Ok(Self { http, base: config.url.trim_end_matches('/').to_owned(), shown_base: config.redacted_url().trim_end_matches('/').to_owned() })
    }

    async fn send<T: for<'de> Deserialize<'de>>(&self, request: reqwest::RequestBuilder, what: &str) -> Result<T, CodecError> {
        let fail = |cause: String| CodecError::Registry(format!("{what} at {}: {cause}", self.shown_base));
        let response = request.send().await.map_err(|e| fail(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let shown: String = body.chars().take(200).collect();
            return Err(fail(format!("answered {status}: {shown}")));
        }
        response.json::<T>().await.map_err(|e| fail(format!("unreadable answer: {}", error_chain(&e))))
    }

    /// Registers `schema` under `subject` (or finds it registered) and returns its id.
    async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError> {
        let url = format!("{}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let request = self.http.post(url).header("content-type", "application/vnd.schemaregistry.v1+json").json(&body);
        let answer: IdAnswer = self.send(request, &format!("registering the schema of {subject}")).await?;
        Ok(answer.id)
    }

    /// The schema text with this id (`deleted=true`: old messages still name deleted versions).
    async fn schema(&self, id: u32) -> Result<String, CodecError> {
        let url = format!("{}/schemas/ids/{id}?deleted=true", self.base);
        let answer: SchemaAnswer = self.send(self.http.get(url), &format!("fetching schema {id}")).await?;
        Ok(answer.schema)
    }
}

/// The HTTP client every registry call goes through (the codec's, `/readyz`'s, the startup
/// check's): the configured timeout, the CA file added to the system's roots, and basic auth
/// on every request when a user is set. The error says which setting is at fault.
pub fn http_client(config: &RegistryConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().timeout(config.timeout()).connect_timeout(config.timeout()).no_proxy();
    let security = &config.security;
    if let Some(path) = &security.ca_location {
        let pem = std::fs::read(path).map_err(|e| format!("SCHEMA_REGISTRY_CA_LOCATION: cannot read {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("SCHEMA_REGISTRY_CA_LOCATION: {} holds no PEM certificate: {}", path.display(), error_chain(&e)))?;
        if certificates.is_empty() {
            return Err(format!("SCHEMA_REGISTRY_CA_LOCATION: {} holds no PEM certificate", path.display()));
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(username) = &security.username {
        let password = security.password().map(|p| p.expose()).unwrap_or_default();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| "SCHEMA_REGISTRY_USERNAME: not usable in an HTTP header".to_owned())?;
        // Marked sensitive: reqwest and hyper leave it out of their Debug output.
        value.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::AUTHORIZATION, value);
        builder = builder.default_headers(headers);
    }
    builder.build().map_err(|e| format!("cannot build the registry's HTTP client: {}", error_chain(&e)))
}

/// reqwest's Display hides the cause ("error sending request"); the chain says what happened.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Encodes bids for one topic.
pub struct BidEncoder {
    client: RegistryClient,
    subject: String,
    schema: Schema,
    /// The registered schema's id, once known. Registration is idempotent, so two requests
    /// racing to fill it agree.
    id: RwLock<Option<u32>>,
}

impl BidEncoder {
    pub fn new(config: &RegistryConfig, topic: &str) -> Result<Self, CodecError> {
        Ok(Self {
            client: RegistryClient::new(config)?,
            subject: format!("{topic}-value"),
            schema: avro::bid_schema(),
            id: RwLock::new(None),
        })
    }

    /// Registers the schema (or finds it registered) and caches its id.
    pub async fn register(&self) -> Result<u32, CodecError> {
        if let Some(id) = self.id.read().ok().and_then(|id| *id) {
            return Ok(id);
        }
        let id = self.client.register(&self.subject, BID_SCHEMA).await?;
        if let Ok(mut cached) = self.id.write() {
            *cached = Some(id);
        }
        Ok(id)
    }

    pub async fn encode(&self, bid: &Bid) -> Result<Vec<u8>, CodecError> {
        let id = self.register().await?;
        let writer = GenericDatumWriter::builder(&self.schema).build().map_err(|e| CodecError::Encode(e.to_string()))?;
        let datum = writer.write_value_to_vec(avro::to_value(bid)).map_err(|e| CodecError::Encode(e.to_string()))?;
        let mut bytes = Vec::with_capacity(HEADER_LEN + datum.len());
        bytes.push(MAGIC);
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&datum);
        Ok(bytes)
    }
}

/// Decodes bids written by any version of the schema the registry knows.
pub struct BidDecoder {
    client: RegistryClient,
    /// Writer schemas by id. Only schemas that were fetched and parsed are kept: a failure is
    /// never remembered, so a registry that comes back is asked again.
    schemas: RwLock<HashMap<u32, Arc<Schema>>>,
}

impl BidDecoder {
    pub fn new(config: &RegistryConfig) -> Result<Self, CodecError> {
        Ok(Self { client: RegistryClient::new(config)?, schemas: RwLock::new(HashMap::new()) })
    }

    /// The schema id a message names, if it is in the wire format.
    pub fn schema_id(payload: Option<&[u8]>) -> Result<(u32, &[u8]), CodecError> {
        let bytes = payload.ok_or_else(|| CodecError::Malformed("the message has no value".into()))?;
        if bytes.len() < HEADER_LEN || bytes[0] != MAGIC {
            return Err(CodecError::Malformed(format!(
                "no wire-format header (magic byte 0 and a schema id): {} bytes starting {:02x?}",
                bytes.len(),
                &bytes[..bytes.len().min(8)]
            )));
        }
        let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        Ok((id, &bytes[HEADER_LEN..]))
    }

    async fn writer_schema(&self, id: u32) -> Result<Arc<Schema>, CodecError> {
        if let Some(schema) = self.schemas.read().ok().and_then(|s| s.get(&id).cloned()) {
            return Ok(schema);
        }
        let text = self.client.schema(id).await?;
        let schema = Schema::parse_str(&text)
            .map_err(|e| CodecError::Malformed(format!("schema {id} named by the message is not Avro: {e}")))?;
        let schema = Arc::new(schema);
        if let Ok(mut schemas) = self.schemas.write() {
            schemas.insert(id, schema.clone());
        }
        Ok(schema)
    }

    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<Bid, CodecError> {
        let (id, mut datum) = Self::schema_id(payload)?;
        let writer = self.writer_schema(id).await?;
        // Read with the writer's schema alone; `avro::from_value` picks the bid's fields by
        // name, so a version with more fields reads alike. (apache-avro 0.22's resolution into
        // a reader schema refuses this schema's own decimals.)
        let reader = GenericDatumReader::builder(&writer)
            .build()
            .map_err(|e| CodecError::Malformed(format!("schema {id} cannot be read as a bid: {e}")))?;
        let value = reader
            .read_value(&mut datum)
            .map_err(|e| CodecError::Malformed(format!("the Avro datum does not decode with schema {id}: {e}")))?;
        Ok(avro::from_value(value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_without_the_wire_format_header_are_malformed() {
        for bad in [&b""[..], b"\x00\x00", b"not avro", b"\x01\x00\x00\x00\x01\x02"] {
            assert!(matches!(BidDecoder::schema_id(Some(bad)), Err(CodecError::Malformed(_))), "{bad:?}");
        }
        assert!(matches!(BidDecoder::schema_id(None), Err(CodecError::Malformed(_))));
        assert_eq!(BidDecoder::schema_id(Some(b"\x00\x00\x00\x01\x07\x09")).unwrap(), (263, &b"\x09"[..]));
    }

    #[test]
    fn only_registry_failures_are_retriable() {
        assert!(CodecError::Registry("answered 404".into()).is_retriable());
        assert!(!CodecError::Malformed("x".into()).is_retriable());
        assert!(!CodecError::Encode("x".into()).is_retriable());
    }
}
