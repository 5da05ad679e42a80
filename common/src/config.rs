//! Settings shared by every binary. Each is a CLI flag and an environment variable; defaults
//! point at the local stack (`make stack-up`). Every Kafka, registry and MySQL client is built
//! from these types (see [`crate::kafka`], [`crate::registry`], [`crate::db`]).
//!
//! Secrets (`KAFKA_SASL_PASSWORD`, `SCHEMA_REGISTRY_PASSWORD`, `DATABASE_PASSWORD`, the password in
//! `DATABASE_URL`) come from the environment or from a file (`*_FILE`, as Docker and Kubernetes
//! mount secrets); they are held in [`Secret`], whose `Debug` prints `***` and which has no
//! `Display`, so no log line or error message can show one by accident.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A password or API secret. Never printed: `Debug` shows `***`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to a client library; never for a log or a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Reads a secret from a file (the `*_FILE` settings). One trailing line break is dropped: secret
/// files are usually written with `echo`. The error names the file, never its content.
pub fn read_secret_file(path: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the secret file {path}: {e}"))?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if text.is_empty() {
        return Err(format!("the secret file {path} is empty"));
    }
    Ok(Secret(text.to_owned()))
}

/// A file the settings name (a CA certificate): checked to be readable when the setting is parsed.
fn readable_file(path: &str) -> Result<PathBuf, String> {
    std::fs::File::open(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    Ok(PathBuf::from(path))
}

/// A setting that cannot work, found before any connection is tried.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn config_error(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting, problem: problem.into() }
}

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
    /// How to connect: TLS, SASL, and any other librdkafka property.
    #[command(flatten)]
    pub security: KafkaSecurity,
}

impl KafkaConfig {
    /// Plaintext brokers and a topic of 6 partitions (the local stack's defaults).
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self { brokers: brokers.into(), topic: topic.into(), topic_partitions: 6, security: KafkaSecurity::default() }
    }
}

/// librdkafka's `security.protocol`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    #[value(name = "PLAINTEXT")]
    Plaintext,
    #[value(name = "SSL")]
    Ssl,
    #[value(name = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[value(name = "SASL_SSL")]
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

/// librdkafka's `sasl.mechanism`: those built into librdkafka (GSSAPI and OAUTHBEARER would need
/// more than a user and a password).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    #[value(name = "PLAIN")]
    Plain,
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// librdkafka properties given as they are, for what the typed settings do not cover: from
/// `KAFKA_CONFIG_<property>` environment variables (`_` for `.`, any case:
/// `KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE=true`) and a Java-style properties file
/// (`KAFKA_PROPERTIES_FILE`). `Debug` shows the names only: values may be secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaProperties(pub Vec<(String, String)>);

impl fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(name, _)| format!("{name}=***"))).finish()
    }
}

/// The prefix of environment variables passed through to librdkafka.
pub const KAFKA_CONFIG_ENV_PREFIX: &str = "KAFKA_CONFIG_";

impl KafkaProperties {
    /// `KAFKA_CONFIG_*` variables of this process, sorted by name so the result is stable.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut found: Vec<(String, String)> = vars
            .into_iter()
            .filter_map(|(name, value)| {
                let property = name.strip_prefix(KAFKA_CONFIG_ENV_PREFIX)?;
                (!property.is_empty()).then(|| (property.to_ascii_lowercase().replace('_', "."), value))
            })
            .collect();
        found.sort();
        Self(found)
    }

    /// Parses a properties file: `name=value` (or `name: value`) a line, `#` and `!` start comments.
    pub fn parse_file(path: &str) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let mut found = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some(split) = line.find(['=', ':']) else {
                return Err(format!("{path} line {}: expected name=value", n + 1));
            };
            found.push((line[..split].trim().to_owned(), line[split + 1..].trim().to_owned()));
        }
        Ok(Self(found))
    }
}

/// How Kafka clients connect. The defaults are the local stack's plaintext listener.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KafkaSecurity {
    /// How to talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[arg(id = "kafka_security_protocol", value_name = "PROTOCOL", long = "kafka-security-protocol", env = "KAFKA_SECURITY_PROTOCOL", value_enum, ignore_case = true, default_value = "PLAINTEXT")]
    pub protocol: SecurityProtocol,
    /// SASL mechanism (with SASL_*): PLAIN (Confluent Cloud API keys), SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(id = "kafka_sasl_mechanism", value_name = "MECHANISM", long = "kafka-sasl-mechanism", env = "KAFKA_SASL_MECHANISM", value_enum, ignore_case = true)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name (the API key on Confluent Cloud).
    #[arg(id = "kafka_sasl_username", value_name = "USER", long = "kafka-sasl-username", env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (the API secret on Confluent Cloud). Never logged.
    #[arg(id = "kafka_sasl_password", value_name = "PASSWORD", long = "kafka-sasl-password", env = "KAFKA_SASL_PASSWORD", hide_env_values = true, conflicts_with = "kafka_sasl_password_file")]
    pub sasl_password: Option<Secret>,
    /// A file holding the SASL password, instead of KAFKA_SASL_PASSWORD.
    #[arg(id = "kafka_sasl_password_file", long = "kafka-sasl-password-file", env = "KAFKA_SASL_PASSWORD_FILE", value_name = "PATH", value_parser = read_secret_file)]
    pub sasl_password_from_file: Option<Secret>,
    /// PEM file of the CA certificates that sign the brokers' certificates (default: the system's).
    #[arg(id = "kafka_ssl_ca_location", long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION", value_name = "PATH", value_parser = readable_file)]
    pub ssl_ca_location: Option<PathBuf>,
    /// A properties file of further librdkafka settings (`name=value` a line); KAFKA_CONFIG_<property>
    /// environment variables (`_` for `.`) are applied after it.
    #[arg(id = "kafka_properties_file", long = "kafka-properties-file", env = "KAFKA_PROPERTIES_FILE", value_name = "PATH", value_parser = KafkaProperties::parse_file)]
    pub properties_file: Option<KafkaProperties>,
    #[arg(skip = KafkaProperties::from_env())]
    pub env_properties: KafkaProperties,
}

impl KafkaSecurity {
    pub fn sasl_password(&self) -> Option<&Secret> {
        self.sasl_password.as_ref().or(self.sasl_password_from_file.as_ref())
    }

    /// Every pass-through property, the file's first: a variable overrides the file.
    pub fn extra_properties(&self) -> impl Iterator<Item = &(String, String)> {
        self.properties_file.iter().flat_map(|p| p.0.iter()).chain(self.env_properties.0.iter())
    }

    /// The checks no broker is needed for: SASL settings come together, and only with SASL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sasl = self.protocol.uses_sasl();
        if sasl {
            if self.sasl_mechanism.is_none() {
                return Err(config_error(
                    "KAFKA_SASL_MECHANISM",
                    format!("required with KAFKA_SECURITY_PROTOCOL={}: one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", self.protocol.as_str()),
                ));
            }
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                return Err(config_error("KAFKA_SASL_USERNAME", format!("required with KAFKA_SECURITY_PROTOCOL={}", self.protocol.as_str())));
            }
            if self.sasl_password().is_none() {
                return Err(config_error(
                    "KAFKA_SASL_PASSWORD",
                    format!("required with KAFKA_SECURITY_PROTOCOL={} (or KAFKA_SASL_PASSWORD_FILE)", self.protocol.as_str()),
                ));
            }
        } else {
            let given = [
                ("KAFKA_SASL_MECHANISM", self.sasl_mechanism.is_some()),
                ("KAFKA_SASL_USERNAME", self.sasl_username.is_some()),
                ("KAFKA_SASL_PASSWORD", self.sasl_password().is_some()),
            ];
            if let Some((setting, _)) = given.iter().find(|(_, set)| *set) {
                return Err(config_error(
                    setting,
                    format!("only used with KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL, not {}", self.protocol.as_str()),
                ));
            }
        }
        if self.ssl_ca_location.is_some() && !self.protocol.uses_tls() {
            return Err(config_error(
                "KAFKA_SSL_CA_LOCATION",
                format!("only used with KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL, not {}", self.protocol.as_str()),
            ));
        }
        Ok(())
    }
}

#[derive(clap::Args, Clone)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible schema registry API (no trailing slash). Credentials
    /// in it (`https://key:secret@host/...`) work, but SCHEMA_REGISTRY_USERNAME/PASSWORD are clearer.
    #[arg(id = "schema_registry_url", long = "schema-registry-url", env = "SCHEMA_REGISTRY_URL", default_value = "http://127.0.0.1:8081/apis/ccompat/v7", hide_env_values = true)]
    pub url: String,
    /// How long one call to the registry may take.
    #[arg(long = "schema-registry-timeout-ms", env = "SCHEMA_REGISTRY_TIMEOUT_MS", default_value_t = 3000)]
    pub timeout_ms: u64,
    /// TLS and basic auth.
    #[command(flatten)]
    pub security: RegistrySecurity,
}

/// How the registry client authenticates and which CA it trusts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RegistrySecurity {
    /// PEM file of the CA certificates that sign an https registry's certificate (added to the system's).
    #[arg(id = "schema_registry_ca_location", long = "schema-registry-ca-location", env = "SCHEMA_REGISTRY_CA_LOCATION", value_name = "PATH", value_parser = readable_file)]
    pub ca_location: Option<PathBuf>,
    /// Basic-auth user (the registry API key on Confluent Cloud).
    #[arg(id = "schema_registry_username", value_name = "USER", long = "schema-registry-username", env = "SCHEMA_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Basic-auth password (the registry API secret on Confluent Cloud). Never logged.
    #[arg(id = "schema_registry_password", value_name = "PASSWORD", long = "schema-registry-password", env = "SCHEMA_REGISTRY_PASSWORD", hide_env_values = true, conflicts_with = "schema_registry_password_file")]
    pub password: Option<Secret>,
    /// A file holding the registry password, instead of SCHEMA_REGISTRY_PASSWORD.
    #[arg(id = "schema_registry_password_file", long = "schema-registry-password-file", env = "SCHEMA_REGISTRY_PASSWORD_FILE", value_name = "PATH", value_parser = read_secret_file)]
    pub password_from_file: Option<Secret>,
}

impl RegistrySecurity {
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref().or(self.password_from_file.as_ref())
    }
}

impl fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.redacted_url())
            .field("timeout_ms", &self.timeout_ms)
            .field("security", &self.security)
            .finish()
    }
}

impl RegistryConfig {
    /// A registry without TLS settings or credentials, with the default timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), timeout_ms: 3000, security: RegistrySecurity::default() }
    }

    /// The URL without any user or password it carries, for logs and error messages.
    pub fn redacted_url(&self) -> String {
        strip_userinfo(&self.url)
    }

    /// The checks no registry is needed for: an http(s) URL, and a user with a password.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let scheme = self.url.split("://").next().unwrap_or_default();
        if !self.url.contains("://") || !matches!(scheme, "http" | "https") {
            return Err(config_error("SCHEMA_REGISTRY_URL", format!("must start with http:// or https://, got {}", self.redacted_url())));
        }
        match (&self.security.username, self.security.password()) {
            (Some(_), None) => Err(config_error("SCHEMA_REGISTRY_PASSWORD", "required with SCHEMA_REGISTRY_USERNAME (or SCHEMA_REGISTRY_PASSWORD_FILE)")),
            (None, Some(_)) => Err(config_error("SCHEMA_REGISTRY_USERNAME", "required with SCHEMA_REGISTRY_PASSWORD")),
            _ => Ok(()),
        }
    }
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
    /// TLS and a password kept out of the URL.
    #[command(flatten)]
    pub security: DatabaseSecurity,
}

/// MySQL TLS and password settings besides the URL. TLS is asked for in the URL as the MySQL
/// clients do: `?ssl-mode=REQUIRED|VERIFY_CA|VERIFY_IDENTITY` (and optionally `&ssl-ca=<file>`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DatabaseSecurity {
    /// PEM file of the CA certificates that sign the MySQL server's certificate; without an
    /// `ssl-mode` in DATABASE_URL it means VERIFY_CA.
    #[arg(id = "database_ssl_ca", long = "database-ssl-ca", env = "DATABASE_SSL_CA", value_name = "PATH", value_parser = readable_file)]
    pub ssl_ca: Option<PathBuf>,
    /// The MySQL password, instead of the one in DATABASE_URL. Never logged.
    #[arg(id = "database_password", value_name = "PASSWORD", long = "database-password", env = "DATABASE_PASSWORD", hide_env_values = true, conflicts_with = "database_password_file")]
    pub password: Option<Secret>,
    /// A file holding the MySQL password, instead of the one in DATABASE_URL.
    #[arg(id = "database_password_file", long = "database-password-file", env = "DATABASE_PASSWORD_FILE", value_name = "PATH", value_parser = read_secret_file)]
    pub password_from_file: Option<Secret>,
}

impl DatabaseSecurity {
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref().or(self.password_from_file.as_ref())
    }
}

impl DatabaseConfig {
    /// A URL as it is, with no further TLS or password settings.
    pub fn new(url: impl Into<String>, max_connections: usize) -> Self {
        Self { url: url.into(), max_connections, security: DatabaseSecurity::default() }
    }

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
            .field("security", &self.security)
            .finish()
    }
}

/// `scheme://user:password@host/...` without `user:password@`. The credentials end at the last
/// `@` before any `?` or `#`, not at the first `/`: a password pasted unencoded may hold a `/`
/// (API secrets are base64), and a registry's path holds no `@`.
fn strip_userinfo(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let query_start = url[scheme_end..].find(['?', '#']).map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..query_start].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &url[scheme_end + at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser, Debug)]
    struct Settings {
        #[command(flatten)]
        kafka: KafkaConfig,
        #[command(flatten)]
        registry: RegistryConfig,
        #[command(flatten)]
        database: DatabaseConfig,
    }

    fn secret_file(content: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(content)
    }

    /// A file in the temp directory, removed when dropped.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(content: &str) -> Self {
                let path = std::env::temp_dir().join(format!("auction-secret-{}", uuid::Uuid::new_v4()));
                std::fs::write(&path, content).expect("write the temp file");
                Self(path)
            }
            pub fn as_str(&self) -> &str {
                self.0.to_str().expect("a UTF-8 temp path")
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn database_password_never_shows_in_debug_output() {
        let mut config = DatabaseConfig::new("mysql://auction:s3cret@db:3306/auction", 1);
        config.security.password = Some(Secret::new("0therSecret"));
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("0therSecret"), "{shown}");
        assert!(shown.contains("mysql://auction:***@db:3306/auction"), "{shown}");
    }

    #[test]
    fn no_secret_shows_in_the_debug_output_of_any_setting() {
        let password_file = secret_file("fromAfile-77\n");
        let properties = secret_file("sasl.oauthbearer.client.secret=propSecret-5\n# a comment\nsocket.keepalive.enable = true\n");
        let settings = Settings::try_parse_from([
            "x",
            "--kafka-security-protocol=sasl_ssl",
            "--kafka-sasl-mechanism=SCRAM-SHA-512",
            "--kafka-sasl-username=alice",
            "--kafka-sasl-password=kafkaSecret-1",
            &format!("--kafka-properties-file={}", properties.as_str()),
            "--schema-registry-url=https://key:urlSecret-2@registry.example/apis",
            "--schema-registry-username=key",
            &format!("--schema-registry-password-file={}", password_file.as_str()),
            "--database-url=mysql://auction:dbSecret-3@db/auction?ssl-mode=REQUIRED",
            "--database-password=dbSecret-4",
        ])
        .expect("the settings parse");
        let shown = format!("{settings:?}");
        for secret in ["kafkaSecret-1", "urlSecret-2", "dbSecret-3", "dbSecret-4", "fromAfile-77", "propSecret-5"] {
            assert!(!shown.contains(secret), "{secret} shows in {shown}");
        }
        assert!(shown.contains("alice") && shown.contains("sasl.oauthbearer.client.secret=***"), "{shown}");
        assert_eq!(settings.registry.security.password().map(Secret::expose), Some("fromAfile-77"));
        assert_eq!(settings.registry.redacted_url(), "https://registry.example/apis");
        assert_eq!(strip_userinfo("https://KEY:ab/cd+ef@psrc.example/apis?x=1"), "https://psrc.example/apis?x=1");
        assert_eq!(settings.kafka.security.sasl_password().map(Secret::expose), Some("kafkaSecret-1"));
        assert_eq!(settings.kafka.security.validate(), Ok(()));
    }

    #[test]
    fn a_bad_protocol_or_mechanism_is_refused_naming_the_setting_and_what_is_allowed() {
        let error = Settings::try_parse_from(["x", "--kafka-security-protocol=TLS"]).unwrap_err().to_string();
        assert!(error.contains("--kafka-security-protocol") && error.contains("SASL_SSL"), "{error}");
        let error = Settings::try_parse_from(["x", "--kafka-sasl-mechanism=GSSAPI"]).unwrap_err().to_string();
        assert!(error.contains("--kafka-sasl-mechanism") && error.contains("SCRAM-SHA-512"), "{error}");
        let error = Settings::try_parse_from(["x", "--kafka-sasl-password-file=/nonexistent/secret"]).unwrap_err().to_string();
        assert!(error.contains("--kafka-sasl-password-file") && error.contains("/nonexistent/secret"), "{error}");
    }

    #[test]
    fn sasl_settings_must_come_together_and_only_with_sasl() {
        let mut security = KafkaSecurity { protocol: SecurityProtocol::SaslSsl, ..Default::default() };
        assert_eq!(security.validate().unwrap_err().setting, "KAFKA_SASL_MECHANISM");
        security.sasl_mechanism = Some(SaslMechanism::Plain);
        assert_eq!(security.validate().unwrap_err().setting, "KAFKA_SASL_USERNAME");
        security.sasl_username = Some("key".into());
        assert_eq!(security.validate().unwrap_err().setting, "KAFKA_SASL_PASSWORD");
        security.sasl_password = Some(Secret::new("s"));
        assert_eq!(security.validate(), Ok(()));
        security.protocol = SecurityProtocol::Ssl;
        let error = security.validate().unwrap_err();
        assert_eq!(error.setting, "KAFKA_SASL_MECHANISM");
        assert!(error.to_string().contains("only used with KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL, not SSL"), "{error}");
    }

    #[test]
    fn kafka_config_variables_become_librdkafka_properties() {
        let vars = [("KAFKA_CONFIG_SOCKET_KEEPALIVE_ENABLE", "true"), ("KAFKA_BROKERS", "b:9092"), ("KAFKA_CONFIG_client_id", "web")];
        let found = KafkaProperties::from_vars(vars.map(|(n, v)| (n.to_owned(), v.to_owned())));
        assert_eq!(found.0, vec![("client.id".to_owned(), "web".to_owned()), ("socket.keepalive.enable".to_owned(), "true".to_owned())]);
    }

    #[test]
    fn a_secret_file_loses_its_final_line_break_only() {
        let file = secret_file("pa ss\r\n");
        assert_eq!(read_secret_file(file.as_str()).map(|s| s.expose().to_owned()), Ok("pa ss".to_owned()));
        let empty = secret_file("\n");
        assert!(read_secret_file(empty.as_str()).unwrap_err().contains("is empty"));
    }

    #[test]
    fn registry_credentials_need_each_other_and_an_http_url() {
        let mut config = RegistryConfig::new("https://r.example");
        config.security.username = Some("key".into());
        assert_eq!(config.validate().unwrap_err().setting, "SCHEMA_REGISTRY_PASSWORD");
        config.security.password = Some(Secret::new("s"));
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(RegistryConfig::new("r.example:8081").validate().unwrap_err().setting, "SCHEMA_REGISTRY_URL");
    }
}
