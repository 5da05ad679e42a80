use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context;
use auction_common::config::{DatabaseConfig, KafkaConfig, RegistryConfig};
use auction_common::{db, kafka, registry::BidEncoder};

use crate::pages::Pages;
use crate::publish::BidPublisher;
use crate::store::Store;
use crate::{api, pages};

/// Settings of the site. Every one is also an environment variable.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "auction-web", version, about = "The auction bidding site")]
pub struct WebConfig {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long = "bind-addr", env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: String,
    /// How long a bid may wait for the broker's ack, retries included, before the bidder gets a 503.
    #[arg(long = "kafka-delivery-timeout-ms", env = "KAFKA_DELIVERY_TIMEOUT_MS", default_value_t = 5000)]
    pub delivery_timeout_ms: u64,
    /// HTTP worker threads (default: one per CPU core).
    #[arg(long = "http-workers", env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    #[command(flatten)]
    pub kafka: KafkaConfig,
    #[command(flatten)]
    pub registry: RegistryConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
}

/// Everything a request handler may use; built once, shared by every worker.
pub struct AppState {
    pub publisher: BidPublisher,
    pub store: Store,
    pub pages: Pages,
    pub readiness: Readiness,
}

/// What `/readyz` checks.
pub struct Readiness {
    pub kafka: KafkaConfig,
    pub registry_url: String,
    pub http: reqwest::Client,
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Connects the clients (lazily: a stack that is down makes the site unready, not dead) and
    /// binds the listener.
    pub async fn build(config: WebConfig) -> anyhow::Result<Self> {
        let delivery_timeout = Duration::from_millis(config.delivery_timeout_ms);
        let producer = kafka::bid_producer(&config.kafka, delivery_timeout).context("Failed to create the Kafka producer")?;
        let encoder = BidEncoder::new(&config.registry, &config.kafka.topic).context("Failed to set up the schema registry client")?;
        let pool = db::pool(&config.database).with_context(|| format!("Invalid DATABASE_URL {}", config.database.redacted_url()))?;
        let http = reqwest::Client::builder()
            .timeout(config.registry.timeout())
            .no_proxy()
            .build()
            .context("Failed to build the HTTP client")?;

        let state = web::Data::new(AppState {
            publisher: BidPublisher::new(producer, encoder, config.kafka.topic.clone()),
            store: Store::new(pool),
            pages: Pages::new().context("Failed to load the templates")?,
            readiness: Readiness { kafka: config.kafka.clone(), registry_url: config.registry.url.clone(), http },
        });
        prepare_in_background(state.clone(), config.kafka.clone());

        let listener = TcpListener::bind(&config.bind_addr).with_context(|| format!("Failed to bind {}", config.bind_addr))?;
        let address = listener.local_addr()?;
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(middleware::Logger::new("%a \"%r\" %s %Dms").exclude("/healthz").exclude("/readyz"))
                .configure(routes)
        })
        .shutdown_timeout(10)
        .listen(listener)?;
        if let Some(workers) = config.http_workers {
            server = server.workers(workers);
        }
        Ok(Self { address, server: server.run(), state })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Serves until SIGINT/SIGTERM, then flushes what the producer still holds.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.server.await?;
        self.state.publisher.flush(Duration::from_secs(10));
        Ok(())
    }
}

/// Every route of the site, in one place.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::FormConfig::default().limit(16 * 1024))
        .app_data(web::PayloadConfig::default().limit(16 * 1024))
        .route("/", web::get().to(pages::home))
        .route("/auctions/{id}/bids", web::post().to(pages::place_bid))
        .route("/api/auctions/{id}", web::get().to(api::get_auction))
        .route("/api/auctions/{id}/bids", web::post().to(api::place_bid))
        .route("/healthz", web::get().to(api::healthz))
        .route("/readyz", web::get().to(api::readyz));
}

/// Creates the topic and registers the schema, retrying until both succeed, so the site can
/// start before the stack and the first bid pays no registration round trip.
fn prepare_in_background(state: web::Data<AppState>, kafka_config: KafkaConfig) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            let topic = kafka::ensure_topic(&kafka_config).await;
            let schema = state.publisher.register_schema().await;
            match (&topic, &schema) {
                (Ok(()), Ok(id)) => {
                    log::info!("topic {} ready, schema id {id}", kafka_config.topic);
                    return;
                }
                _ => log::warn!(
                    "not ready yet (topic: {:?}, schema: {:?}); retrying in {delay:?}",
                    topic.err(),
                    schema.err().map(|e| e.to_string())
                ),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

pub(crate) type SharedState = web::Data<AppState>;

#[cfg(test)]
mod tests {
    use super::WebConfig;
    use clap::{CommandFactory, Parser};

    #[test]
    fn every_setting_has_a_flag_and_the_defaults_point_at_the_local_stack() {
        WebConfig::command().debug_assert();
        let config = WebConfig::try_parse_from(["auction-web"]).unwrap();
        assert_eq!(config.bind_addr, "127.0.0.1:8080");
        assert_eq!(config.registry.url, "http://127.0.0.1:8081/apis/ccompat/v7");
        assert_eq!(config.database.url, "mysql://auction:auction@127.0.0.1:3306/auction");
        let config = WebConfig::try_parse_from(["auction-web", "--schema-registry-url", "http://r", "--database-url", "mysql://d"]).unwrap();
        assert_eq!((config.registry.url.as_str(), config.database.url.as_str()), ("http://r", "mysql://d"));
    }
}
