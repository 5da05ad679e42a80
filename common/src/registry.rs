//! Avro encoding and decoding through the schema registry (Confluent wire format: a magic
//! byte, the schema id, the Avro datum). The encoder registers `schemas/bid.avsc` under
//! `<topic>-value` on first use and caches the id; the decoder looks schemas up by the id in
//! each message and caches them.

use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema};

use crate::avro::{self, RecordError, BID_SCHEMA};
use crate::config::RegistryConfig;
use crate::domain::Bid;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The registry could not be reached or answered with a server error: try again later.
    #[error("schema registry unavailable: {0}")]
    Unavailable(SRCError),
    /// The bytes or the schema are wrong; trying again will not help.
    #[error("cannot encode or decode with the registry's schema: {0}")]
    Permanent(SRCError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl CodecError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::Unavailable(_))
    }
}

impl From<SRCError> for CodecError {
    fn from(e: SRCError) -> Self {
        if e.retriable {
            CodecError::Unavailable(e)
        } else {
            CodecError::Permanent(e)
        }
    }
}

pub fn settings(config: &RegistryConfig) -> Result<SrSettings, CodecError> {
    SrSettings::new_builder(config.url.trim_end_matches('/').to_owned())
        .set_timeout(config.timeout())
        .no_proxy()
        .build()
        .map_err(CodecError::Permanent)
}

/// Encodes bids for one topic.
pub struct BidEncoder {
    encoder: AvroEncoder,
    strategy: SubjectNameStrategy,
}

impl BidEncoder {
    pub fn new(config: &RegistryConfig, topic: &str) -> Result<Self, CodecError> {
        let schema = SuppliedSchema::new(None, SchemaType::Avro, BID_SCHEMA.to_owned());
        Ok(Self {
            encoder: AvroEncoder::new(settings(config)?),
            strategy: SubjectNameStrategy::TopicNameStrategyWithSchema(topic.to_owned(), false, schema),
        })
    }

    /// Registers the schema (or finds it registered) and caches its id.
    pub async fn register(&self) -> Result<u32, CodecError> {
        let subject = self.strategy.get_subject()?;
        let schema = self.encoder.get_schema_and_id(&subject, self.strategy.clone()).await;
        schema.map(|s| s.id).map_err(|e| self.failed(e))
    }

    pub async fn encode(&self, bid: &Bid) -> Result<Vec<u8>, CodecError> {
        self.encoder.encode_value(avro::to_value(bid), &self.strategy).await.map_err(|e| self.failed(e))
    }

    /// A failed registration is cached by the converter; forget it so the next bid asks again
    /// once the registry is back.
    fn failed(&self, e: SRCError) -> CodecError {
        self.encoder.remove_errors_from_cache();
        e.into()
    }
}

/// Decodes bids written by any version of the schema the registry knows.
pub struct BidDecoder {
    decoder: AvroDecoder,
}

impl BidDecoder {
    pub fn new(config: &RegistryConfig) -> Result<Self, CodecError> {
        Ok(Self { decoder: AvroDecoder::new(settings(config)?) })
    }

    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<Bid, CodecError> {
        match self.decoder.decode(payload).await {
            Ok(result) => Ok(avro::from_value(result.value)?),
            Err(e) => {
                if e.retriable {
                    self.decoder.remove_errors_from_cache();
                }
                Err(e.into())
            }
        }
    }
}
