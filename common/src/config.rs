//! Settings shared by every binary. Each is a CLI flag and an environment variable; defaults
//! point at the local stack (`make stack-up`). Every Kafka, registry and MySQL client is built
//! from these types (see [`crate::kafka`], [`crate::registry`], [`crate::db`]), so adding TLS or
//! SASL later touches one place.

use std::fmt;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic the bids are produced to and consumed from.
    #[arg(long = "bids-topic", env = "BIDS_TOPIC", default_value = "bids")]
    pub topic: String,
    /// Partitions the topic is created with when it does not exist yet.
    #[arg(long = "bids-topic-partitions", env = "BIDS_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible schema registry API (no trailing slash).
    #[arg(id = "schema_registry_url", long = "schema-registry-url", env = "SCHEMA_REGISTRY_URL", default_value = "http://127.0.0.1:8081/apis/ccompat/v7")]
    pub url: String,
    /// How long one call to the registry may take.
    #[arg(long = "schema-registry-timeout-ms", env = "SCHEMA_REGISTRY_TIMEOUT_MS", default_value_t = 3000)]
    pub timeout_ms: u64,
}

impl RegistryConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(clap::Args, Clone)]
pub struct DatabaseConfig {
    /// MySQL URL, mysql://user:password@host:port/database. The password is never logged.
    #[arg(id = "database_url", long = "database-url", env = "DATABASE_URL", default_value = "mysql://auction:auction@127.0.0.1:3306/auction", hide_env_values = true)]
    pub url: String,
    /// Most connections the process keeps open to MySQL.
    #[arg(long = "database-max-connections", env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub max_connections: usize,
}

impl DatabaseConfig {
    /// The URL with its password masked, for logs and error messages.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &self.url[scheme + 3..at];
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{}{}:***{}", &self.url[..scheme + 3], user, &self.url[at..])
            }
            _ => self.url.clone(),
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_password_never_shows_in_debug_output() {
        let config = DatabaseConfig { url: "mysql://auction:s3cret@db:3306/auction".into(), max_connections: 1 };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("mysql://auction:***@db:3306/auction"), "{shown}");
    }
}
